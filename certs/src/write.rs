//! Certificate and key files on disk, keys readable by their owner only.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::{GenerateError, Pem};

/// Writes `pem.cert` to `dir/cert_name` (0644) and `pem.key` to `dir/key_name` (0600).
pub fn write_pair(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    pem: &Pem,
) -> Result<(), GenerateError> {
    fs::create_dir_all(dir).map_err(|error| GenerateError::Write {
        path: dir.to_owned(),
        error,
    })?;
    write_file(&dir.join(cert_name), &pem.cert, 0o644)?;
    write_file(&dir.join(key_name), &pem.key, 0o600)
}

/// Writes a file with the given mode. The mode is set at creation (no window in which a
/// private key is readable by others) and again afterwards, since an existing file keeps
/// its old mode on open.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), GenerateError> {
    let err = |error| GenerateError::Write {
        path: path.to_owned(),
        error,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(err)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path).map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_support::{opts, tmpdir};
    use crate::{CA_CERT_FILE, CA_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE, generate};

    #[cfg(unix)]
    #[test]
    fn key_files_are_0600_even_when_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("modes");
        // A pre-existing world-readable key file must not keep its mode.
        write_file(&dir.join(TLS_KEY_FILE), "old", 0o644).unwrap();
        generate(&opts()).unwrap().write_dir(&dir).unwrap();
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(TLS_KEY_FILE), 0o600);
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(TLS_CERT_FILE), 0o644);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        fs::remove_dir_all(dir).unwrap();
    }
}
