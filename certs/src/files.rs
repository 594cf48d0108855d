//! File mode: the serving certificate and key are files written by someone else
//! (cert-manager, through a mounted Secret), reloaded when they change.
//!
//! The files are polled, and compared by content rather than by modification time or inode:
//! Kubernetes updates a Secret volume by writing a new timestamped directory and renaming the
//! `..data` symlink onto it, so `tls.crt` (a symlink to `..data/tls.crt`) changes content
//! without its own inode or mtime changing, and inotify on the file sees nothing. Reading two
//! small files every few seconds costs nothing and sees every kind of update.
//!
//! A pair is only installed when both files parse, the key matches the certificate and the
//! certificate is valid now; otherwise the current pair keeps serving (a writer that replaces
//! the files one after the other is seen half-way at most once).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::{LoadError, LoadedPair, parse_pair, rfc3339};

/// Called with each pair that is installed (the first one included): swap the server's
/// certificate, update the expiry metric.
pub type OnLoad = Arc<dyn Fn(&LoadedPair) + Send + Sync>;

/// What one look at the files found.
#[derive(Debug)]
pub enum Poll {
    /// Same content as the pair in use.
    Unchanged,
    /// A new, valid pair: install it.
    Changed(LoadedPair),
    /// New content that cannot serve; the pair in use stays. `persistent` is true from the
    /// second consecutive look at the same bad content (a writer half-way is seen once).
    Invalid { error: LoadError, persistent: bool },
}

/// What the certificate and key files hold.
type Content = (Vec<u8>, Vec<u8>);

/// The certificate and key files, and the content of the pair in use.
#[derive(Debug)]
pub struct Reloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Content,
    /// Content last found invalid, and how many consecutive looks found it.
    bad: Option<(Content, u32)>,
}

impl Reloader {
    /// Loads the pair, with every check of [`crate::load_pair`]: this is the start-up check,
    /// so a pair that cannot serve is an error here.
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<(Self, LoadedPair), LoadError> {
        let content = read_both(cert_path, key_path)?;
        let pair = parse_pair(&content.0, &content.1, cert_path, key_path)?;
        pair.check_time(OffsetDateTime::now_utc())?;
        Ok((
            Self {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                current: content,
                bad: None,
            },
            pair,
        ))
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Reads both files and compares them with the pair in use.
    pub fn poll(&mut self, now: OffsetDateTime) -> Poll {
        let content = match read_both(&self.cert_path, &self.key_path) {
            Ok(content) => content,
            Err(error) => {
                // A file missing for a moment (a writer that deletes and recreates) is
                // treated like bad content: the error text stands in for the content.
                let marker = (error.to_string().into_bytes(), Vec::new());
                return self.invalid(marker, error);
            }
        };
        if content == self.current {
            self.bad = None;
            return Poll::Unchanged;
        }
        let checked = parse_pair(&content.0, &content.1, &self.cert_path, &self.key_path)
            .and_then(|pair| pair.check_time(now).map(|()| pair));
        match checked {
            Ok(pair) => {
                self.current = content;
                self.bad = None;
                Poll::Changed(pair)
            }
            Err(error) => self.invalid(content, error),
        }
    }

    fn invalid(&mut self, content: Content, error: LoadError) -> Poll {
        let seen = match &mut self.bad {
            Some((bad, count)) if *bad == content => {
                *count += 1;
                *count
            }
            _ => {
                self.bad = Some((content, 1));
                1
            }
        };
        Poll::Invalid {
            error,
            persistent: seen >= 2,
        }
    }
}

fn read_both(cert_path: &Path, key_path: &Path) -> Result<Content, LoadError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| LoadError::Unreadable {
            path: path.to_owned(),
            error,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

/// Logs what a pair is, on install.
pub fn log_installed(pair: &LoadedPair, source: &str, what: &str) {
    tracing::info!(
        source,
        serial = %pair.serial(),
        subject = %pair.subject(),
        not_after = %rfc3339(pair.not_after),
        "{what}"
    );
}

/// Polls the files every `interval` for ever, calling `on_load` with each new valid pair.
/// Bad content is logged once as a warning when it persists (and at debug level the first
/// time, which is usually a writer half-way); an expired pair in use is logged as an error.
pub async fn watch(
    mut reloader: Reloader,
    mut not_after: OffsetDateTime,
    interval: Duration,
    on_load: OnLoad,
) {
    let source = reloader.cert_path.display().to_string();
    let mut expired_logged = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = OffsetDateTime::now_utc();
        match reloader.poll(now) {
            Poll::Unchanged => {}
            Poll::Changed(pair) => {
                on_load(&pair);
                log_installed(&pair, &source, "serving certificate reloaded from files");
                not_after = pair.not_after;
                expired_logged = false;
            }
            Poll::Invalid {
                error,
                persistent: false,
            } => {
                tracing::debug!(error = %error, "certificate files changed but are not a valid pair yet; keeping the current one");
            }
            Poll::Invalid {
                error,
                persistent: true,
            } => {
                // Only on the second look at this content: logged once per bad content.
                if reloader.bad.as_ref().is_some_and(|(_, n)| *n == 2) {
                    tracing::warn!(error = %error, "certificate files are not a valid pair; still serving the previous certificate");
                }
            }
        }
        if now > not_after && !expired_logged {
            expired_logged = true;
            tracing::error!(
                not_after = %rfc3339(not_after),
                "the serving certificate in use has expired and no valid replacement was found in {source}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::{GenerateOptions, TLS_CERT_FILE, TLS_KEY_FILE, generate, write_file};

    fn tmpdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wi-certs-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn bundle() -> crate::Bundle {
        generate(&GenerateOptions {
            dns_names: vec!["localhost".into()],
            ..Default::default()
        })
        .unwrap()
    }

    /// A Secret volume: `..<ts>/{tls.crt,tls.key}`, `..data -> ..<ts>`, and
    /// `tls.crt -> ..data/tls.crt`; `publish` swaps `..data` atomically like the kubelet.
    struct SecretVolume {
        dir: PathBuf,
        n: u32,
    }

    impl SecretVolume {
        fn new(dir: PathBuf, pem: &crate::Pem) -> Self {
            let mut v = Self { dir, n: 0 };
            v.publish(pem);
            for name in [TLS_CERT_FILE, TLS_KEY_FILE] {
                std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.join(name)).unwrap();
            }
            v
        }

        fn publish(&mut self, pem: &crate::Pem) {
            self.n += 1;
            let ts = format!("..2025_01_01_00_00_{:02}.{}", self.n, self.n);
            crate::write_pair(&self.dir.join(&ts), TLS_CERT_FILE, TLS_KEY_FILE, pem).unwrap();
            let tmp = self.dir.join("..data_tmp");
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&ts, &tmp).unwrap();
            fs::rename(&tmp, self.dir.join("..data")).unwrap();
        }
    }

    #[test]
    fn symlink_swap_is_seen_though_the_files_inode_does_not_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = tmpdir("swap");
        let (a, b) = (bundle(), bundle());
        let mut volume = SecretVolume::new(dir.clone(), &a.serving);
        let cert = dir.join(TLS_CERT_FILE);
        let key = dir.join(TLS_KEY_FILE);
        let (mut reloader, first) = Reloader::open(&cert, &key).unwrap();
        let inode = fs::symlink_metadata(&cert).unwrap().ino();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(reloader.poll(now), Poll::Unchanged));

        volume.publish(&b.serving);
        assert_eq!(fs::symlink_metadata(&cert).unwrap().ino(), inode);
        let Poll::Changed(second) = reloader.poll(now) else {
            panic!("the swap was not seen");
        };
        assert_ne!(first.serial(), second.serial());
        assert!(b.serving.cert.contains(&pem_body(&second.chain[0])));
        assert!(matches!(reloader.poll(now), Poll::Unchanged));
        fs::remove_dir_all(dir).unwrap();
    }

    fn pem_body(der: &[u8]) -> String {
        use base64::Engine as _;
        // The first 60 base64 characters are enough to recognise the certificate.
        base64::engine::general_purpose::STANDARD.encode(der)[..60].to_owned()
    }

    #[test]
    fn half_written_pair_keeps_the_old_one_until_both_match() {
        let dir = tmpdir("half");
        let (a, b) = (bundle(), bundle());
        let cert = dir.join(TLS_CERT_FILE);
        let key = dir.join(TLS_KEY_FILE);
        crate::write_pair(&dir, TLS_CERT_FILE, TLS_KEY_FILE, &a.serving).unwrap();
        let (mut reloader, first) = Reloader::open(&cert, &key).unwrap();
        let now = OffsetDateTime::now_utc();

        // The writer has replaced the certificate, not yet the key.
        write_file(&cert, &b.serving.cert, 0o644).unwrap();
        let Poll::Invalid { error, persistent } = reloader.poll(now) else {
            panic!("a mismatched pair was accepted");
        };
        assert!(matches!(error, LoadError::KeyMismatch { .. }), "{error}");
        assert!(
            !persistent,
            "the first look at a half-written pair is not worth a warning"
        );
        // Still the same content on the next look: now it is worth a warning.
        assert!(matches!(
            reloader.poll(now),
            Poll::Invalid {
                persistent: true,
                ..
            }
        ));

        // A truncated key (written, not yet complete).
        write_file(&key, &b.serving.key[..40], 0o600).unwrap();
        assert!(matches!(reloader.poll(now), Poll::Invalid { .. }));
        // Missing for a moment.
        fs::remove_file(&key).unwrap();
        let Poll::Invalid { error, .. } = reloader.poll(now) else {
            panic!("a missing key was accepted");
        };
        assert!(matches!(error, LoadError::Unreadable { .. }), "{error}");

        write_file(&key, &b.serving.key, 0o600).unwrap();
        let Poll::Changed(second) = reloader.poll(now) else {
            panic!("the complete pair was not taken");
        };
        assert_ne!(first.serial(), second.serial());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expired_replacement_is_not_installed() {
        let dir = tmpdir("expired");
        let a = bundle();
        let old = generate(&GenerateOptions {
            dns_names: vec!["localhost".into()],
            not_before: OffsetDateTime::now_utc() - time::Duration::days(10),
            days: 1,
            ..Default::default()
        })
        .unwrap();
        let cert = dir.join(TLS_CERT_FILE);
        let key = dir.join(TLS_KEY_FILE);
        crate::write_pair(&dir, TLS_CERT_FILE, TLS_KEY_FILE, &a.serving).unwrap();
        let (mut reloader, _) = Reloader::open(&cert, &key).unwrap();
        crate::write_pair(&dir, TLS_CERT_FILE, TLS_KEY_FILE, &old.serving).unwrap();
        let Poll::Invalid { error, .. } = reloader.poll(OffsetDateTime::now_utc()) else {
            panic!("an expired pair was installed");
        };
        assert!(matches!(error, LoadError::Expired { .. }), "{error}");
        // And at start-up it is refused outright.
        let err = Reloader::open(&cert, &key).unwrap_err();
        assert!(matches!(err, LoadError::Expired { .. }), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn watch_installs_each_new_pair_once() {
        let dir = tmpdir("watch");
        let (a, b) = (bundle(), bundle());
        let mut volume = SecretVolume::new(dir.clone(), &a.serving);
        let (reloader, first) =
            Reloader::open(&dir.join(TLS_CERT_FILE), &dir.join(TLS_KEY_FILE)).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let on_load: OnLoad = {
            let seen = seen.clone();
            Arc::new(move |pair: &LoadedPair| seen.lock().unwrap().push(pair.serial()))
        };
        let task = tokio::spawn(async move {
            watch(
                reloader,
                first.not_after,
                Duration::from_millis(20),
                on_load,
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        volume.publish(&b.serving);
        let expected = b.serving.cert.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        task.abort();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let der = rustls::pki_types::CertificateDer::from_pem_slice(expected.as_bytes()).unwrap();
        assert_eq!(seen[0], crate::serial_hex(&der));
        fs::remove_dir_all(dir).unwrap();
    }
}
