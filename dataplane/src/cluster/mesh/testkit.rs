//! Test helpers shared by the mesh's tests: recording inbounds, free ports, small clusters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Answer, Inbound, LinkSettings, Mesh};
use crate::cluster::membership::Members;
use crate::cluster::proto::{self as pb, message::Kind};

/// Records what it receives.
#[derive(Default)]
pub(super) struct Recorder(pub(super) Mutex<Vec<(String, Kind)>>);

impl Inbound for Recorder {
    fn receive(&self, from: &str, message: Kind) -> Option<Answer> {
        // Answers requests with the asker's name.
        let reply = match &message {
            Kind::Request(r) => Some(pb::Message::of(Kind::Reply(pb::Reply {
                id: r.id,
                json: bytes::Bytes::from(format!("\"answer to {from}\"")),
                tail: None,
            }))),
            _ => None,
        };
        self.0.lock().push((from.to_string(), message));
        reply.map(|r| Box::pin(async move { r }) as Answer)
    }
}

/// Answers nothing, ever: requests to it wait until it is gone.
pub(super) struct Mute;

impl Inbound for Mute {
    fn receive(&self, _: &str, message: Kind) -> Option<Answer> {
        match message {
            Kind::Request(_) => Some(Box::pin(std::future::pending())),
            _ => None,
        }
    }
}

pub(crate) fn free_port(ip: [u8; 4]) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    l.local_addr().unwrap()
}

pub(super) fn broadcast(n: u64) -> pb::Message {
    pb::Message::of(Kind::Broadcast(pb::Broadcast {
        namespace: "/".into(),
        packet: bytes::Bytes::from(format!("2[\"n\",{n}]")),
        ..Default::default()
    }))
}

pub(crate) fn fast() -> LinkSettings {
    LinkSettings {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(200),
        queue: 1024,
        queue_bytes: 64 * 1024 * 1024,
        max_message_bytes: 64 * 1024 * 1024,
        ..LinkSettings::default()
    }
}

/// The CA of every test mesh of this process.
pub(crate) fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(Pki::new)
}

pub(super) fn tls_settings() -> super::TlsSettings {
    super::TlsSettings {
        reload_interval: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(2),
        max_handshakes: 8,
    }
}

/// Member `id`'s TLS, with a certificate of the test CA ([`pki`]).
pub(super) fn member_tls(id: &str) -> Arc<super::PeerTls> {
    let dir = pki().write_member(id);
    super::PeerTls::load(id, Pki::files(&dir), tls_settings()).unwrap()
}

/// Starts `mesh` over TLS with a certificate of the test CA on `listen`.
pub(crate) async fn start(mesh: &Arc<Mesh>, listen: SocketAddr) {
    mesh.secure(member_tls(mesh.me()));
    mesh.start(listen).await.unwrap();
}

pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) struct Node {
    pub(super) mesh: Arc<Mesh>,
    pub(super) got: Arc<Recorder>,
}

pub(super) async fn cluster(n: usize, settings: LinkSettings) -> (Members, Vec<Node>) {
    let mut members = Members::new();
    for i in 0..n {
        members.insert(format!("n{i}"), free_port([127, 0, 0, 1]));
    }
    let mut nodes = Vec::new();
    for i in 0..n {
        let got = Arc::new(Recorder::default());
        let id = format!("n{i}");
        let mesh = Mesh::new(&id, &members, settings, got.clone()).unwrap();
        start(&mesh, members.addr(&id).unwrap()).await;
        nodes.push(Node { mesh, got });
    }
    (members, nodes)
}

pub(super) async fn node(id: &str, members: &Members, settings: LinkSettings) -> Node {
    let got = Arc::new(Recorder::default());
    let mesh = Mesh::new(id, members, settings, got.clone()).unwrap();
    start(&mesh, members.addr(id).unwrap()).await;
    Node { mesh, got }
}

/// The broadcasts `node` received: (from, packet).
pub(super) fn received(node: &Node) -> Vec<(String, String)> {
    node.got
        .0
        .lock()
        .iter()
        .filter_map(|(from, kind)| match kind {
            Kind::Broadcast(b) => Some((
                from.clone(),
                String::from_utf8_lossy(&b.packet).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// A throwaway CA for tests, issuing member certificates (a DNS SAN per member id, usable
/// as client and server).
pub(crate) struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A member's certificate and key, PEM.
pub(crate) struct Leaf {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let n: u64 = rand::random();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {n:x}"));
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub(crate) fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().into_bytes()
    }

    pub(crate) fn member(&self, id: &str) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec![id.to_string()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        }
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` of member `id` into a new temporary folder.
    pub(crate) fn write_member(&self, id: &str) -> std::path::PathBuf {
        let n: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("roomcast-pki-{id}-{n:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        let leaf = self.member(id);
        std::fs::write(dir.join("ca.crt"), self.ca_pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), leaf.cert).unwrap();
        std::fs::write(dir.join("tls.key"), leaf.key).unwrap();
        dir
    }

    pub(crate) fn files(dir: &std::path::Path) -> super::reload::TlsFiles {
        super::reload::TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }
}
