//! The admin token: configured, or generated at first start into `<data-dir>/admin-token`.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// File name of the generated token inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// Where the token came from (for the start-up log; the token itself is never logged).
#[derive(Debug)]
pub enum TokenSource {
    Configured,
    Generated(PathBuf),
    Existing(PathBuf),
}

/// Returns the configured token, or the one stored in the data directory, generating and
/// storing it (mode 0600) on first start.
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> std::io::Result<(String, TokenSource)> {
    if let Some(token) = configured {
        return Ok((token.to_owned(), TokenSource::Configured));
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok((text.trim().to_owned(), TokenSource::Existing(path)))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("cfadm_{}", bs58::encode(raw).into_string());
    write_private(&path, &token)?;
    Ok((token, TokenSource::Generated(path)))
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, source) = resolve(None, dir.path()).expect("generate");
        assert!(matches!(source, TokenSource::Generated(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, source) = resolve(None, dir.path()).expect("reuse");
        assert!(matches!(source, TokenSource::Existing(_)));
        assert_eq!(first, second);
    }

    #[test]
    fn a_configured_token_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (token, _) = resolve(Some("configured-token-123"), dir.path()).expect("configured");
        assert_eq!(token, "configured-token-123");
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }
}
