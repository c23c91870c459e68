//! `stacklab-vmm`: one micro-VM run in its own process.
//!
//! The server starts one of these per VM (so a misbehaving guest or a VMM
//! bug can never take the server down, and the kernel reclaims everything
//! when it exits). It prints one JSON object per line on stdout: each step
//! as `{"event": …}`, then `{"done": …}` or `{"error": …}`.
//!
//! Usage: stacklab-vmm --image PATH [--mem-mib N] [--deadline-ms N] [--mode N]

use std::io::Write;
use std::time::Duration;

use stacklab_vmm::protocol::Line;
use stacklab_vmm::vm::{self, VmConfig};

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// `Rss:` and `Pss:` of this process, in bytes.
fn own_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("Rss:"), field("Pss:"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut image = None;
    let mut config = VmConfig::default();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = || value.parse::<u64>().ok();
        match flag.as_str() {
            "--image" => image = Some(value),
            "--mem-mib" => config.mem_bytes = number().unwrap_or(0) as usize * (1 << 20),
            "--deadline-ms" => config.deadline = Duration::from_millis(number().unwrap_or(0)),
            "--mode" => config.mode = number().unwrap_or(u64::MAX) as u32,
            _ => {
                emit(&Line::Error {
                    code: "usage".into(),
                    message: format!("unknown flag {flag:?}"),
                });
                std::process::exit(2);
            }
        }
    }
    let Some(path) = image else {
        emit(&Line::Error {
            code: "usage".into(),
            message: "--image PATH is required".into(),
        });
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            emit(&Line::Error {
                code: "load".into(),
                message: format!("cannot read {path}: {e}"),
            });
            std::process::exit(1);
        }
    };
    match vm::run(&bytes, &config, &mut |e| emit(&Line::Event(e.clone()))) {
        Ok(report) => {
            let (rss, pss) = own_memory();
            emit(&Line::Done {
                report,
                vmm_rss_bytes: rss,
                vmm_pss_bytes: pss,
            });
        }
        Err(e) => {
            emit(&Line::Error {
                code: e.code().into(),
                message: e.to_string(),
            });
            std::process::exit(1);
        }
    }
}
