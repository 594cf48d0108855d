//! How figures are written in the document.

/// What a block says when its results are missing.
pub const NOT_MEASURED: &str = "_Not measured yet: run `bench/run.sh`._";

/// Microseconds, in µs or ms with the digits that matter; `–` for no figure.
pub fn us(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else if v >= 1_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

pub fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// A figure as the results file writes it (`23.5`, `16.0`): machine figures are copied as
/// they were saved.
pub fn as_saved(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// " (runs: a, b, c)" of a repeated figure, when there is more than one.
pub fn each(values: &[f64], show: impl Fn(f64) -> String) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let shown: Vec<String> = values.iter().map(|&v| show(v)).collect();
    format!(" (runs: {})", shown.join(", "))
}
