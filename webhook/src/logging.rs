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
