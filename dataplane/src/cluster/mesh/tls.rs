//! The TLS material of the peer port, from PEM, and the identity rule of the mesh.
//!
//! A member presents one certificate both when it dials (client) and when it accepts
//! (server), so the leaf must be valid for both uses and carry a DNS subject alternative
//! name equal to its member id. Every side checks the other's chain against the trust
//! bundle (one or more CAs: two while a CA rotates). [`Material::from_pem`] is pure: it
//! parses, checks that this node's own certificate is one its peers will accept (chain,
//! validity, SAN, key), and builds the rustls configurations. Only TLS 1.3 is offered: both
//! sides are this program.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Why TLS material is unusable (the node keeps the material it had, or does not start).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: not PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what}: no certificate in it")]
    NoCertificate { what: &'static str },
    #[error("the trust bundle: {0}")]
    Trust(rustls::Error),
    #[error("the trust bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("member id {id:?} is not a DNS name, which a certificate can name")]
    NotADnsName { id: String },
    #[error("this node's certificate is not one its peers accept as {id:?}: {source}")]
    OwnCertificate { id: String, source: rustls::Error },
    #[error("this node's key does not fit its certificate: {0}")]
    Key(rustls::Error),
}

/// Why a peer's certificate does not prove the member id it claims.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("the claimed member id {0:?} is not a DNS name")]
    NotADnsName(String),
    #[error("unreadable client certificate: {0}")]
    BadCertificate(webpki::Error),
    #[error("the client certificate is not valid for {claimed:?}: {source}")]
    Mismatch {
        claimed: String,
        source: webpki::Error,
    },
}

/// One generation of TLS material: what new handshakes use.
#[derive(Debug)]
pub struct Material {
    pub(super) server: Arc<ServerConfig>,
    pub(super) client: Arc<ClientConfig>,
    /// The app link listener's: the same certificate, no client certificate asked (app
    /// instances present a token instead).
    pub(crate) app_server: Arc<ServerConfig>,
}

/// The crypto provider of the mesh (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `id` as the server name a certificate must carry.
pub fn server_name(id: &str) -> Option<ServerName<'static>> {
    match ServerName::try_from(id.to_string()) {
        Ok(name @ ServerName::DnsName(_)) => Some(name),
        _ => None,
    }
}

impl Material {
    /// Builds the material of member `me` from the PEM of the trust bundle, its certificate
    /// chain (leaf first) and its private key.
    pub fn from_pem(ca: &[u8], chain: &[u8], key: &[u8], me: &str) -> Result<Self, TlsError> {
        let pem = |what| move |source| TlsError::Pem { what, source };
        let anchors = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the trust bundle"))?;
        if anchors.is_empty() {
            return Err(TlsError::NoCertificate {
                what: "the trust bundle",
            });
        }
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots.add(anchor).map_err(TlsError::Trust)?;
        }
        let roots = Arc::new(roots);
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the certificate"))?;
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(TlsError::NoCertificate {
                what: "the certificate",
            });
        };
        let key = PrivateKeyDer::from_pem_slice(key).map_err(pem("the key"))?;
        let name = server_name(me).ok_or_else(|| TlsError::NotADnsName { id: me.into() })?;
        let provider = provider();
        // Checked the way a peer that dials this node checks it (chain, validity, SAN):
        // a certificate of another CA or another member fails here, not at every peer.
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()?
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map_err(|source| TlsError::OwnCertificate {
            id: me.into(),
            source,
        })?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        // And the way a peer that this node dials checks it (client authentication).
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|source| TlsError::OwnCertificate {
                id: me.into(),
                source,
            })?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Key)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(TlsError::Key)?;
        let mut app_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Key)?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(TlsError::Key)?;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Key)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Key)?;
        // HTTP/2 is all the peer port speaks.
        server.alpn_protocols = vec![b"h2".to_vec()];
        client.alpn_protocols = vec![b"h2".to_vec()];
        app_server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            app_server: Arc::new(app_server),
        })
    }
}

/// Checks that `leaf` (a client certificate the handshake already chained to the trust
/// bundle) names the member id its holder claims.
pub fn check_identity(
    leaf: Option<&CertificateDer<'_>>,
    claimed: &str,
) -> Result<(), IdentityError> {
    let leaf = leaf.ok_or(IdentityError::NoCertificate)?;
    let name = server_name(claimed).ok_or_else(|| IdentityError::NotADnsName(claimed.into()))?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(IdentityError::BadCertificate)?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|source| IdentityError::Mismatch {
            claimed: claimed.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::mesh::testkit::Pki;

    #[test]
    fn a_member_certificate_of_the_bundle_loads() {
        let pki = Pki::new();
        let m = pki.member("n0");
        assert!(Material::from_pem(&pki.ca_pem(), &m.cert, &m.key, "n0").is_ok());
        // A bundle of two CAs (rotation) works too.
        let other = Pki::new();
        let bundle = [pki.ca_pem(), other.ca_pem()].concat();
        assert!(Material::from_pem(&bundle, &m.cert, &m.key, "n0").is_ok());
    }

    #[test]
    fn unusable_material_says_why() {
        let pki = Pki::new();
        let m = pki.member("n0");
        let err = |ca: &[u8], cert: &[u8], key: &[u8], me: &str| {
            Material::from_pem(ca, cert, key, me)
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"", &m.cert, &m.key, "n0").contains("trust bundle: no certificate"));
        assert!(
            err(&pki.ca_pem(), b"junk", &m.key, "n0").contains("the certificate: no certificate")
        );
        assert!(err(&pki.ca_pem(), &m.cert, b"", "n0").contains("the key: not PEM"));
        // Another member's certificate, or one of another CA, is refused as this node's.
        assert!(err(&pki.ca_pem(), &m.cert, &m.key, "n1")
            .contains("not one its peers accept as \"n1\""));
        let other = Pki::new();
        assert!(err(&other.ca_pem(), &m.cert, &m.key, "n0").contains("not one its peers accept"));
        // A key of another certificate.
        let m1 = pki.member("n0");
        assert!(err(&pki.ca_pem(), &m.cert, &m1.key, "n0").contains("key does not fit"));
        assert!(err(&pki.ca_pem(), &m.cert, &m.key, "10.0.0.1").contains("not a DNS name"));
    }

    #[test]
    fn identity_is_the_dns_name_of_the_certificate() {
        let pki = Pki::new();
        let m = pki.member("hub-0");
        let leaf = CertificateDer::from_pem_slice(&m.cert).unwrap();
        assert!(check_identity(Some(&leaf), "hub-0").is_ok());
        assert!(matches!(
            check_identity(Some(&leaf), "hub-1"),
            Err(IdentityError::Mismatch { .. })
        ));
        assert!(matches!(
            check_identity(None, "hub-0"),
            Err(IdentityError::NoCertificate)
        ));
        assert!(matches!(
            check_identity(Some(&leaf), "not a name"),
            Err(IdentityError::NotADnsName(_))
        ));
    }
}
