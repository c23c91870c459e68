//! Numbers as text, and small sorts, without Rust's float formatting and
//! sort machinery: the browser's `Number.prototype.toFixed`/`toString`
//! already format numbers, and Rust's float formatter (about 11 KB of
//! code) and its stable sort (about 4 KB per element type) cost the
//! bundle more than they are worth for a few dozen values. Nothing in the
//! app may format an `f64` with `format!` or pass one as an attribute
//! (that calls the same formatter): use these.
//!
//! Imports only `js_sys`.

/// `v` with `digits` decimals (`toFixed`), e.g. `fixed(1.25, 1)` = "1.3".
pub fn fixed(v: f64, digits: u8) -> String {
    js_sys::Number::from(v)
        .to_fixed(digits)
        .map(String::from)
        .unwrap_or_default()
}

/// `v` in its shortest form (`toString`), e.g. "5" or "0.25": for counts
/// and SVG coordinates.
pub fn n(v: f64) -> String {
    js_sys::Number::from(v)
        .to_string_with_radix(10)
        .map(String::from)
        .unwrap_or_default()
}

/// Sorts `v` by `key`, ascending (insertion sort: the app sorts at most a
/// few hundred values).
pub fn sort_by_key<T>(v: &mut [T], key: impl Fn(&T) -> f64) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && key(&v[j - 1]) > key(&v[j]) {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}
