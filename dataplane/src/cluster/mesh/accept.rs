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
        if let Some(conn) = conn.as_ref().filter(|c| c.tls) {
            if let Err(error) = check_identity(conn.leaf.as_ref(), &hello.member) {
                host.link_refused();
                tracing::warn!(remote = ?remote, claimed = %hello.member, %error, "peer link refused: the certificate is not that member's");
                return Err(Status::unauthenticated(
                    "the client certificate is not valid for the member id claimed",
                ));
            }
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
        let client = hello::client_address(&hello, peer.addr);
        link::attach(host, peer, inbound, out, client);
        let stream = ReceiverStream::new(rx).map(Ok);
        let mut response = Response::new(Box::pin(stream) as LinkStream);
        hello::write(response.metadata_mut(), &host.hello());
        Ok(response)
    }
}
