//! What the crate's tests share.

use std::fs;
use std::path::PathBuf;

use crate::GenerateOptions;

pub(crate) fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wi-certs-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn opts() -> GenerateOptions {
    GenerateOptions {
        dns_names: vec!["wi-webhook.wi-system.svc".into(), "localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    }
}
