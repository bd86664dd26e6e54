//! Accepting: the gRPC service on the peer listener that takes the links of the members
//! that dial this node. It checks the caller's Hello (a current member, and one that should
//! be dialing), then hands the stream to a link ([`super::link`]).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::dial::dials;
use super::link::{self, peer_client_address, Host, STREAM_DEPTH};
use crate::cluster::proto::peer_server::Peer as PeerService;
use crate::cluster::proto::{self as pb, message::Kind};

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
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(host.settings().heartbeat_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello"))??
            .ok_or_else(|| Status::cancelled("closed before hello"))?;
        let mut messages = first.messages.into_iter();
        let Some(Kind::Hello(hello)) = messages.next().and_then(|m| m.kind) else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
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
        for kind in messages.filter_map(|m| m.kind) {
            host.handle(peer, kind);
        }
        let (out, rx) = mpsc::channel(STREAM_DEPTH);
        let client = peer_client_address(&hello, peer.addr);
        link::attach(host, peer, inbound, out, true, client);
        let stream = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
