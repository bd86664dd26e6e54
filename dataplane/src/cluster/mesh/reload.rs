//! Keeps the peer port's TLS material current: the trust bundle, certificate and key files
//! are read again every `reloadInterval`, and when any changed, new material is built from
//! them. New handshakes (accepted and dialed) use the newest material; links already up
//! keep the session they negotiated (TLS authenticates a connection once, at its start),
//! so a rotation never breaks a link. A file that cannot be read or material that does not
//! build is logged and counted, and the node keeps the material it had: a half-written
//! rotation never takes a node off its hub.
//!
//! CA rotation therefore goes: trust bundle old+new everywhere, then leaves issued by the
//! new CA, then the bundle new only; each step is picked up within one interval.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::tls::{Material, TlsError};

/// Where the material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The limits of the TLS listener and the reload timing (`cluster.tls`).
#[derive(Debug, Clone, Copy)]
pub struct TlsSettings {
    pub reload_interval: Duration,
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
}

/// Why the material could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Material(#[from] TlsError),
}

/// What one check of the files found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but are unusable; the previous material stays in use.
    Failed(LoadError),
}

/// The TLS side of the peer port of member `me`.
pub struct PeerTls {
    me: String,
    files: TlsFiles,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshakes: usize,
    pub(super) reload_interval: Duration,
    current: RwLock<Arc<Material>>,
    /// The file contents last looked at (usable or not), to tell a change.
    seen: Mutex<[Vec<u8>; 3]>,
    pub(super) reloads: AtomicU64,
    pub(super) reloads_failed: AtomicU64,
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl PeerTls {
    fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], LoadError> {
        Ok([read(&files.ca)?, read(&files.cert)?, read(&files.key)?])
    }

    /// Loads the material of member `me`; fails when it is unusable (the node does not start).
    pub fn load(me: &str, files: TlsFiles, settings: TlsSettings) -> Result<Arc<Self>, LoadError> {
        let seen = Self::read_all(&files)?;
        let material = Material::from_pem(&seen[0], &seen[1], &seen[2], me)?;
        Ok(Arc::new(Self {
            me: me.to_string(),
            files,
            handshake_timeout: settings.handshake_timeout,
            max_handshakes: settings.max_handshakes.max(1),
            reload_interval: settings.reload_interval,
            current: RwLock::new(Arc::new(material)),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }))
    }

    /// The material new handshakes use.
    pub(crate) fn material(&self) -> Arc<Material> {
        self.current.read().clone()
    }

    /// Reads the files; builds new material when they changed since the last check.
    pub fn check(&self) -> Reload {
        let contents = match Self::read_all(&self.files) {
            Ok(contents) => contents,
            Err(error) => return Reload::Failed(error),
        };
        let mut seen = self.seen.lock();
        if *seen == contents {
            return Reload::Unchanged;
        }
        let built = Material::from_pem(&contents[0], &contents[1], &contents[2], &self.me);
        *seen = contents;
        match built {
            Ok(material) => {
                *self.current.write() = Arc::new(material);
                Reload::Reloaded
            }
            Err(error) => Reload::Failed(error.into()),
        }
    }

    /// Checks the files every `reload_interval`, forever (the mesh aborts it on close).
    pub(super) async fn run(self: Arc<Self>) {
        let mut failing = false;
        loop {
            tokio::time::sleep(self.reload_interval).await;
            match self.check() {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    failing = false;
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cert = %self.files.cert.display(), ca = %self.files.ca.display(), "peer TLS material reloaded; new handshakes use it");
                }
                Reload::Failed(error) => {
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    // A missing file is reported once per episode, a bad new one once.
                    if !failing || matches!(error, LoadError::Material(_)) {
                        tracing::error!(error = %error, "peer TLS material not reloaded; keeping the previous one");
                    }
                    failing = matches!(error, LoadError::Read { .. });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::mesh::testkit::Pki;

    fn settings() -> TlsSettings {
        TlsSettings {
            reload_interval: Duration::from_millis(100),
            handshake_timeout: Duration::from_secs(1),
            max_handshakes: 4,
        }
    }

    #[test]
    fn changes_are_picked_up_and_broken_ones_keep_the_old_material() {
        let pki = Pki::new();
        let dir = pki.write_member("n0");
        let files = Pki::files(&dir);
        assert!(matches!(
            PeerTls::load("n1", files.clone(), settings()),
            Err(LoadError::Material(TlsError::OwnCertificate { .. }))
        ));
        let tls = PeerTls::load("n0", files.clone(), settings()).unwrap();
        assert!(matches!(tls.check(), Reload::Unchanged));
        let first = tls.material();
        // A broken certificate: refused, the old material stays, and it is not retried.
        std::fs::write(&files.cert, b"garbage").unwrap();
        assert!(matches!(
            tls.check(),
            Reload::Failed(LoadError::Material(_))
        ));
        assert!(Arc::ptr_eq(&first, &tls.material()));
        assert!(matches!(tls.check(), Reload::Unchanged));
        // A missing file: the same.
        std::fs::remove_file(&files.key).unwrap();
        assert!(matches!(
            tls.check(),
            Reload::Failed(LoadError::Read { .. })
        ));
        assert!(Arc::ptr_eq(&first, &tls.material()));
        // A new, good certificate and key: in use from now on.
        let renewed = pki.member("n0");
        std::fs::write(&files.cert, &renewed.cert).unwrap();
        std::fs::write(&files.key, &renewed.key).unwrap();
        assert!(matches!(tls.check(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&first, &tls.material()));
        assert!(matches!(tls.check(), Reload::Unchanged));
    }
}
