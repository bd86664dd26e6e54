//! `roomcast-dataplane certs`: a CA and member certificates for the peer port's mutual TLS
//! (`cluster.tls`), for a local cluster or any hub whose certificates are not issued by the
//! operator. ECDSA P-256; each member certificate carries a DNS subject alternative name
//! equal to the member id and is valid for TLS client and server authentication, as the
//! mesh requires. Files are never overwritten without `--force`; keys are written 0600.
//!
//! Issuing is pure ([`new_ca`], [`issue`]); [`run`] reads and writes the files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};

use crate::cluster::Material;

/// Certificates for the peer port.
#[derive(Debug, Clone, Subcommand)]
pub enum CertsCommand {
    /// Creates a CA: `ca.crt` and `ca.key` in `--out`.
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issues member `--id` a certificate of the CA in `--ca`: `tls.crt`, `tls.key` and
    /// `ca.crt` (the trust bundle) in `--out`, the files `cluster.tls` names.
    Member {
        /// Folder of `ca.crt` and `ca.key`.
        #[arg(long)]
        ca: PathBuf,
        /// The member id (its `nodeId`), a DNS name.
        #[arg(long)]
        id: String,
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// A CA in `--out` and, for each of `--members`, a folder `--out/ID` as `member` writes.
    Cluster {
        #[arg(long)]
        out: PathBuf,
        /// Member ids, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Validity from an hour ago (clocks differ a little) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// The CA's name: unique per CA key, so the old and the new CA of a rotation differ, and
/// derived from the key alone, so `issue` needs nothing but the key and the certificate.
fn ca_params(key: &KeyPair, days: u32) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let id = Sha256::digest(key.public_key_raw());
    params.distinguished_name.push(
        DnType::CommonName,
        format!("roomcast peer CA {}", hex::encode(&id[..8])),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    Ok(params)
}

/// A new CA valid for `days`.
pub fn new_ca(days: u32) -> anyhow::Result<Pem> {
    let key = KeyPair::generate()?;
    let cert = ca_params(&key, days)?.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for member `id`, valid for `days`, issued by the CA `ca` (made by
/// [`new_ca`]). Checked as a peer will check it before it is returned.
pub fn issue(ca: &Pem, id: &str, days: u32) -> anyhow::Result<Pem> {
    if !crate::config::is_dns_name(id) {
        bail!("member id {id:?} is not a DNS name (lowercase letters, digits, '-' and '.')");
    }
    let ca_key = KeyPair::from_pem(&ca.key).context("the CA key")?;
    let issuer = Issuer::new(ca_params(&ca_key, days)?, ca_key);
    let mut params = CertificateParams::new(vec![id.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let leaf = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    Material::from_pem(
        ca.cert.as_bytes(),
        leaf.cert.as_bytes(),
        leaf.key.as_bytes(),
        id,
    )
    .context("the CA's certificate and key do not match (was it made by `certs ca`?)")?;
    Ok(leaf)
}

/// Runs one `certs` command.
pub fn run(command: &CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Ca { out, days, force } => {
            let ca = new_ca(*days)?;
            write_ca(out, &ca, *force)
        }
        CertsCommand::Member {
            ca,
            id,
            out,
            days,
            force,
        } => {
            let ca = read_ca(ca)?;
            write_member(out, &ca, &issue(&ca, id, *days)?, *force)
        }
        CertsCommand::Cluster {
            out,
            members,
            days,
            force,
        } => {
            let ca = new_ca(3650)?;
            let leaves = members
                .iter()
                .map(|id| issue(&ca, id, *days))
                .collect::<anyhow::Result<Vec<_>>>()?;
            write_ca(out, &ca, *force)?;
            for (id, leaf) in members.iter().zip(&leaves) {
                write_member(&out.join(id), &ca, leaf, *force)?;
            }
            Ok(())
        }
    }
}

fn read_ca(dir: &Path) -> anyhow::Result<Pem> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    Ok(Pem {
        cert: read("ca.crt")?,
        key: read("ca.key")?,
    })
}

fn write_ca(dir: &Path, ca: &Pem, force: bool) -> anyhow::Result<()> {
    write_files(
        dir,
        &[("ca.crt", &ca.cert, false), ("ca.key", &ca.key, true)],
        force,
    )
}

fn write_member(dir: &Path, ca: &Pem, leaf: &Pem, force: bool) -> anyhow::Result<()> {
    write_files(
        dir,
        &[
            ("tls.crt", &leaf.cert, false),
            ("tls.key", &leaf.key, true),
            ("ca.crt", &ca.cert, false),
        ],
        force,
    )
}

/// Writes `(name, text, secret)` files into `dir` (created if missing): none is written when
/// one exists already, unless `force`. Secret files are created with mode 0600.
fn write_files(dir: &Path, files: &[(&str, &String, bool)], force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !force {
        if let Some((name, _, _)) = files.iter().find(|(name, _, _)| dir.join(name).exists()) {
            bail!(
                "{} exists; not overwriting it without --force",
                dir.join(name).display()
            );
        }
    }
    for (name, text, secret) in files {
        let path = dir.join(name);
        write_file(&path, text, *secret)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let n: u64 = rand::random();
        std::env::temp_dir().join(format!("roomcast-certs-{name}-{n:x}"))
    }

    #[test]
    fn member_certificates_of_a_ca_are_what_the_mesh_accepts() {
        let ca = new_ca(10).unwrap();
        let leaf = issue(&ca, "hub-0", 1).unwrap();
        Material::from_pem(
            ca.cert.as_bytes(),
            leaf.cert.as_bytes(),
            leaf.key.as_bytes(),
            "hub-0",
        )
        .unwrap();
        // Not for another member, nor under another CA.
        assert!(Material::from_pem(
            ca.cert.as_bytes(),
            leaf.cert.as_bytes(),
            leaf.key.as_bytes(),
            "hub-1"
        )
        .is_err());
        let other = new_ca(10).unwrap();
        assert!(Material::from_pem(
            other.cert.as_bytes(),
            leaf.cert.as_bytes(),
            leaf.key.as_bytes(),
            "hub-0"
        )
        .is_err());
        // A key that is not the CA's certificate's is caught at issue time.
        let mixed = Pem {
            cert: ca.cert.clone(),
            key: other.key.clone(),
        };
        assert!(issue(&mixed, "hub-0", 1).is_err());
        assert!(issue(&ca, "Hub_0", 1).is_err());
    }

    #[test]
    fn files_are_written_once_with_private_keys_0600() {
        let dir = temp("cluster");
        let cluster = CertsCommand::Cluster {
            out: dir.clone(),
            members: vec!["hub-0".into(), "hub-1".into()],
            days: 1,
            force: false,
        };
        run(&cluster).unwrap();
        for file in ["ca.crt", "hub-0/tls.crt", "hub-0/ca.crt", "hub-1/tls.key"] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("ca.key"), mode("hub-0/tls.key")), (0o600, 0o600));
        assert_eq!(mode("hub-0/tls.crt"), 0o644);
        let before = std::fs::read(dir.join("ca.key")).unwrap();
        let err = run(&cluster).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);
        // A member of the existing CA, then again with --force.
        let member = |force| CertsCommand::Member {
            ca: dir.clone(),
            id: "hub-2".into(),
            out: dir.join("hub-2"),
            days: 1,
            force,
        };
        run(&member(false)).unwrap();
        assert!(run(&member(false)).is_err());
        run(&member(true)).unwrap();
        let ca = read_ca(&dir).unwrap();
        let m = |f: &str| std::fs::read(dir.join("hub-2").join(f)).unwrap();
        Material::from_pem(ca.cert.as_bytes(), &m("tls.crt"), &m("tls.key"), "hub-2").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
