//! `stacklab bench`: benchmarks that print medians and ratios measured in
//! one run against a baseline (`container`: the Docker CLI; `vm`: QEMU).

mod container;
mod vm;

use std::time::Duration;

pub use container::container;
pub use vm::vm;

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of results: median, min and max of `v` (never empty: `-n` is
/// at least 1).
pub(crate) fn row(name: &str, v: &[Duration]) {
    println!(
        "{name:<44} median {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
        ms(median(v)),
        ms(v.iter().min().copied().unwrap_or_default()),
        ms(v.iter().max().copied().unwrap_or_default())
    )
}

pub(crate) fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
