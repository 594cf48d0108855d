//! The upstream webhook's (Azure Workload Identity v1.6.0) command line, accepted where it
//! means the same, so that its users keep their configuration (docs/migration.md): its
//! address syntax (`:9440`), its log levels, its proxy image variables, Go's single-dash
//! long flags; and a clear refusal, naming what to use instead, for what has no equivalent.

use std::ffi::OsString;
use std::net::SocketAddr;

/// Upstream's variables for the proxy images (ours: WI_PROXY_IMAGE, WI_PROXY_INIT_IMAGE).
pub const PROXY_IMAGE_ENV: &str = "PROXY_IMAGE";
pub const PROXY_INIT_IMAGE_ENV: &str = "PROXY_INIT_IMAGE";

/// Upstream's long flags, which Go also accepts with a single dash.
const GO_FLAGS: &[&str] = &[
    "audience",
    "webhook-cert-dir",
    "disable-cert-rotation",
    "tls-min-version",
    "health-addr",
    "metrics-addr",
    "metrics-backend",
    "log-level",
    "version",
    "custom-token-endpoint-annotation-suffix",
    "custom-token-endpoint-audience",
    "kubeconfig",
];

/// Rewrites `-log-level=info` (Go's single-dash long flag) to `--log-level=info` for
/// upstream's flag names; everything else is left for the parser.
pub fn go_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(s) = arg.to_str() else { return arg };
            let Some(rest) = s.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
                return arg;
            };
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            if GO_FLAGS.contains(&name) {
                OsString::from(format!("-{s}"))
            } else {
                arg
            }
        })
        .collect()
}

/// The flag's value, else our variable (clap already read it into the flag), else
/// upstream's variable, else the default.
pub fn image(flag: &Option<String>, upstream_env: &str, default: &str) -> String {
    flag.clone()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var(upstream_env)
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| default.to_string())
}

/// A listen address: `HOST:PORT`, or `:PORT` (all interfaces) as upstream writes it.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not an address: use HOST:PORT or :PORT (all interfaces)"))
}

/// `--metrics-backend`: upstream's only backend, Prometheus, is the one the webhook serves.
pub fn metrics_backend(s: &str) -> Result<String, String> {
    if s.eq_ignore_ascii_case("prometheus") {
        Ok("prometheus".into())
    } else {
        Err(format!(
            "unsupported metrics backend {s:?}: only prometheus (the text format on \
             /metrics of --metrics-listen)"
        ))
    }
}

/// Our level names, and upstream's: empty (warnings only), `all` (everything).
const LEVELS: &[(&str, &str)] = &[
    ("", "warn"),
    ("off", "off"),
    ("error", "error"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("info", "info"),
    ("debug", "debug"),
    ("trace", "trace"),
    ("all", "trace"),
];

/// `--log-level`: a level (ours or upstream's), or tracing directives such as
/// `info,wi_webhook=debug`. Anything else is refused, never silently read as `info`.
pub fn log_level(s: &str) -> Result<String, String> {
    let level = |word: &str| {
        LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word.trim()))
            .map(|(_, level)| *level)
    };
    if let Some(l) = level(s) {
        return Ok(l.to_string());
    }
    let bad = || {
        format!(
            "unknown log level {s:?}: use error, warn, info, debug or trace (upstream's \
             \"\" and all are read as warn and trace), or directives such as \
             info,wi_webhook=debug"
        )
    };
    let mut parts = Vec::new();
    for part in s.split(',') {
        match level(part) {
            Some(l) if !part.trim().is_empty() => parts.push(l.to_string()),
            // `target=level`: the target is free, the level is checked by the filter.
            _ if part.contains('=') => parts.push(part.trim().to_string()),
            _ => return Err(bad()),
        }
    }
    let directives = parts.join(",");
    tracing_subscriber::EnvFilter::builder()
        .parse(&directives)
        .map(|_| directives)
        .map_err(|e| format!("{}: {e}", bad()))
}

/// A value parser for an upstream flag that has no equivalent here.
pub fn refused(
    flag: &'static str,
    instead: &'static str,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |_| {
        Err(format!(
            "--{flag} (upstream webhook) is not supported: {instead}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses_listen_on_every_interface() {
        assert_eq!(
            listen_addr(":9440").unwrap(),
            "0.0.0.0:9440".parse().unwrap()
        );
        assert_eq!(
            listen_addr("127.0.0.1:8095").unwrap(),
            "127.0.0.1:8095".parse().unwrap()
        );
        assert_eq!(listen_addr("[::1]:1").unwrap(), "[::1]:1".parse().unwrap());
        for bad in ["9440", ":", ":port", "host:1"] {
            let err = listen_addr(bad).unwrap_err();
            assert!(err.contains(":PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn log_levels_ours_upstreams_and_directives() {
        for (given, read) in [
            ("info", "info"),
            ("", "warn"),
            ("all", "trace"),
            ("DEBUG", "debug"),
            ("warning", "warn"),
            ("info,wi_webhook=debug", "info,wi_webhook=debug"),
            ("kube=trace", "kube=trace"),
        ] {
            assert_eq!(log_level(given).as_deref(), Ok(read), "{given}");
        }
        for bad in ["verbose", "inf", "info,,debug", "wi_webhook", "x=loud", "5"] {
            let err = log_level(bad).unwrap_err();
            assert!(err.contains("unknown log level"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_the_prometheus_backend() {
        assert_eq!(metrics_backend("Prometheus").unwrap(), "prometheus");
        let err = metrics_backend("opencensus").unwrap_err();
        assert!(err.contains("only prometheus"), "{err}");
    }

    #[test]
    fn go_single_dash_flags_become_long_flags() {
        let args = go_style_args(
            [
                "wi-webhook",
                "serve",
                "-log-level=debug",
                "-health-addr",
                ":9440",
                "-f",
                "-",
            ]
            .map(OsString::from),
        );
        assert_eq!(
            args,
            [
                "wi-webhook",
                "serve",
                "--log-level=debug",
                "--health-addr",
                ":9440",
                "-f",
                "-"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn proxy_images_from_the_flag_then_upstreams_variable() {
        let flag = Some("r/flag:1".to_string());
        assert_eq!(image(&flag, "WI_TEST_UNSET_VARIABLE", "d"), "r/flag:1");
        assert_eq!(image(&None, "WI_TEST_UNSET_VARIABLE", "d"), "d");
        // PATH is always set: it stands in for upstream's variable.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(image(&None, "PATH", "d"), path);
    }
}
