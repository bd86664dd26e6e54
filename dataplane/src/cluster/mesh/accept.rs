//! Accepting: the gRPC service on the peer listener that takes the links of the members
//! that dial this node. It checks the caller's Hello, from the request headers, before it
//! reads anything of the stream: over TLS the client certificate must be valid for the
//! member id claimed (refusals are logged and counted), and the member must be a current
//! one that should be dialing. Then it hands the stream to a link ([`super::link`]) and
//! answers with its own Hello in the response headers.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::dial::dials;
use super::hello;
use super::link::{self, Host, STREAM_DEPTH};
use super::tls::check_identity;
use super::transport::PeerConnInfo;
use crate::cluster::proto as pb;
use crate::cluster::proto::peer_server::Peer as PeerService;

/// The gRPC service: accepts the links of the members that dial this node.
pub(super) struct Acceptor<H>(pub(super) Arc<H>);

type LinkStream = Pin<Box<dyn Stream<Item = Result<pb::Batch, Status>> + Send>>;

#[tonic::async_trait]
impl<H: Host> PeerService for Acceptor<H> {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<LinkStream>, Status> {
        let host = &self.0;
        let conn = request.extensions().get::<PeerConnInfo>().cloned();
        let remote = conn.as_ref().and_then(|c| c.remote);
        // Who is calling, from the headers and the certificate: nothing of the stream has
        // been read yet.
        let hello = match hello::read(request.metadata()) {
            Ok(hello) => hello,
            Err(status) => {
                host.link_refused();
                tracing::warn!(remote = ?remote, reason = %status.message(), "peer link refused: no hello");
                return Err(status);
            }
        };
        // Over TLS the certificate must name the member id claimed; a connection whose TLS
        // state is unknown counts as one without a certificate.
        if host.tls().is_some() {
            let leaf = conn
                .as_ref()
                .filter(|c| c.tls)
                .and_then(|c| c.leaf.as_ref());
            if let Err(error) = check_identity(leaf, &hello.member) {
                host.link_refused();
                tracing::warn!(remote = ?remote, claimed = %hello.member, %error, "peer link refused: the certificate is not that member's");
                return Err(Status::unauthenticated(
                    "the client certificate is not valid for the member id claimed",
                ));
            }
        }
        if *host.closing().borrow() {
            return Err(Status::unavailable("this member is leaving"));
        }
        let Some(peer) = host.peer(&hello.member) else {
            // Also the normal case for a moment while a new member joins: it may know this
            // node before this node's discovery lists it (it re-dials with backoff).
            tracing::debug!(member = %hello.member, "link from a node that is not a member (yet) refused");
            return Err(Status::permission_denied("not a member of this cluster"));
        };
        let peer = &peer;
        if dials(host.me(), &peer.id) {
            // Both sides would dial each other: the member lists disagree on the ids.
            return Err(Status::failed_precondition(
                "the member whose id sorts first dials",
            ));
        }
        let inbound = request.into_inner();
        let (out, rx) = mpsc::channel(STREAM_DEPTH);
        let advertised = hello::advertised(&hello, peer.addr);
        link::attach(host, peer, inbound, out, advertised);
        let stream = ReceiverStream::new(rx).map(Ok);
        let mut response = Response::new(Box::pin(stream) as LinkStream);
        hello::write(response.metadata_mut(), &host.hello());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::Endpoint;

    use super::super::reload::PeerTls;
    use super::super::testkit::{broadcast, cluster, fast, received, tls_settings, wait_for, Pki};
    use super::super::transport::Connector;
    use super::*;
    use crate::cluster::proto::peer_client::PeerClient;

    /// Opens a link to `addr` (expecting member `server`) claiming to be `claimed`.
    async fn attack(
        addr: std::net::SocketAddr,
        server: &str,
        tls: Option<Arc<PeerTls>>,
        claimed: &str,
    ) -> Result<tonic::Code, String> {
        let connector = Connector {
            addr,
            peer: server.into(),
            tls,
        };
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(3))
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (out, rx) = mpsc::channel(4);
        // Would be injected to the victim's clients if the link were accepted.
        let _ = out.try_send(pb::Batch {
            messages: vec![broadcast(666)],
        });
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        hello::write(
            request.metadata_mut(),
            &pb::Hello {
                member: claimed.into(),
                client_address: String::new(),
                app_address: String::new(),
            },
        );
        let result = PeerClient::new(channel).link(request).await;
        drop(out);
        match result {
            Ok(_) => Ok(tonic::Code::Ok),
            Err(status) => Ok(status.code()),
        }
    }

    /// The call failed below gRPC: the connection never carried a request to the service.
    fn at_handshake(result: Result<tonic::Code, String>) -> bool {
        !matches!(
            result,
            Ok(tonic::Code::Ok
                | tonic::Code::Unauthenticated
                | tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied)
        )
    }

    fn tls_for(pki: &Pki, id: &str) -> Arc<PeerTls> {
        PeerTls::load(id, Pki::files(&pki.write_member(id)), tls_settings()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_holder_of_a_members_certificate_links_as_that_member() {
        let (members, nodes) = cluster(3, fast()).await;
        for node in &nodes {
            wait_for("links", || node.mesh.connected().len() == 2).await;
        }
        let victim = members.addr("n2").unwrap();
        // A certificate of this hub, for n1, claiming to be n0: refused before any message.
        let n1 = tls_for(super::super::testkit::pki(), "n1");
        assert_eq!(
            attack(victim, "n2", Some(n1.clone()), "n0").await,
            Ok(tonic::Code::Unauthenticated)
        );
        assert_eq!(nodes[2].mesh.stats().links_refused, 1);
        // The same without claiming anything.
        assert_eq!(
            attack(victim, "n2", Some(n1), "").await,
            Ok(tonic::Code::InvalidArgument)
        );
        assert_eq!(nodes[2].mesh.stats().links_refused, 2);
        // Another CA's certificate, or none at all (plaintext): no TLS session.
        let stranger = tls_for(&Pki::new(), "n0");
        assert!(at_handshake(
            attack(victim, "n2", Some(stranger), "n0").await
        ));
        assert!(at_handshake(attack(victim, "n2", None, "n0").await));
        // (A client may retry a failed connection once: at least one failure each.)
        wait_for("counted", || nodes[2].mesh.stats().handshakes_failed >= 2).await;
        // The dialer checks the server too: n2's port is not n1's.
        let n0 = tls_for(super::super::testkit::pki(), "n0");
        assert!(at_handshake(attack(victim, "n1", Some(n0), "n0").await));
        // Nothing was injected, and the real links stayed up and carry traffic.
        nodes[0].mesh.send_all(&broadcast(1), false);
        wait_for("delivery", || received(&nodes[2]).len() == 1).await;
        assert_eq!(received(&nodes[2])[0].1, "2[\"n\",1]");
        assert_eq!(nodes[2].mesh.connected().len(), 2);
        for node in &nodes {
            node.mesh.close();
        }
    }

    /// A Hello over the 16 KiB header list is refused by HTTP/2 itself, before the service
    /// reads it: the service would refuse a 20 KiB member id as invalid and count a refused
    /// link, and neither happens. The real links are unaffected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_hello_is_refused_before_the_service() {
        let (members, nodes) = cluster(3, fast()).await;
        for node in &nodes {
            wait_for("links", || node.mesh.connected().len() == 2).await;
        }
        let victim = members.addr("n2").unwrap();
        let n1 = tls_for(super::super::testkit::pki(), "n1");
        let huge = "n".repeat(20 * 1024);
        let result = attack(victim, "n2", Some(n1), &huge).await;
        assert!(
            !matches!(
                result,
                Ok(tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied)
            ),
            "{result:?}"
        );
        assert_eq!(nodes[2].mesh.stats().links_refused, 0);
        nodes[0].mesh.send_all(&broadcast(1), false);
        wait_for("delivery", || received(&nodes[2]).len() == 1).await;
        assert_eq!(nodes[2].mesh.connected().len(), 2);
        for node in &nodes {
            node.mesh.close();
        }
    }
}
