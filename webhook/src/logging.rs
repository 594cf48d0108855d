//! The log format of the binary: text lines (the default) or JSON lines (`--log-json`), one
//! line per admission among them. Built here so that the benchmarks log exactly as
//! `wi-webhook serve` does.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The binary's subscriber with `filter`, writing to `writer` (ANSI colours only when
/// `ansi`). Install it with `SubscriberInitExt::try_init` (which also forwards `log`
/// records), or scope it with `tracing::dispatcher::with_default`.
pub fn subscriber<W>(filter: EnvFilter, json: bool, ansi: bool, writer: W) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).finish().into()
    } else {
        builder.finish().into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, one per line the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(json: bool, filter: &str) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let dispatch = subscriber(EnvFilter::new(filter), json, false, move || out.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(uid = %"u-1", latency_us = 87_u64, decision = "mutated", "admission");
            tracing::debug!("not at info");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_lines_carry_the_fields_and_the_filter_holds() {
        let out = line(false, "info");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("INFO"), "{out}");
        assert!(
            out.contains("admission uid=u-1 latency_us=87 decision=\"mutated\""),
            "{out}"
        );
        assert!(!out.contains('\u{1b}'), "no colours when not asked: {out}");
        assert_eq!(line(false, "debug").lines().count(), 2);
    }

    #[test]
    fn json_lines_carry_the_fields_at_the_top_level() {
        let out = line(true, "info");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "admission");
        assert_eq!(v["uid"], "u-1");
        assert_eq!(v["latency_us"], 87);
        assert_eq!(v["decision"], "mutated");
        assert!(v.get("fields").is_none(), "{out}");
    }
}
