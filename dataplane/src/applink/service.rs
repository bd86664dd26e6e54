//! The gRPC service app instances link to, on `appLink.listen`.
//!
//! Each call is one link: checked (the bearer token, compared in constant time; the
//! instance id), welcomed, then read in order on one task while a second task writes the
//! link's outbox in batches. The link ends when the app ends its stream, the stream
//! fails, the app sends a batch over `appLink.maxBatchBytes`, or the app is too slow to
//! take what is queued for it (`appLink.maxQueuedBytes`); its clients' sessions are then
//! closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::links::AppLinks;
use super::proto::{
    self as pb,
    app_link_server::{AppLink, AppLinkServer},
    hub_message::Kind,
};
use crate::auth::bearer::BearerToken;
use crate::cluster::mesh::{accept, ConnLimit, PeerConnInfo, Port, Refusals};
use crate::cluster::PeerTls;

/// The instance id header.
const INSTANCE: &str = "roomcast-app-instance";
/// Longest instance id.
const MAX_INSTANCE_BYTES: usize = 128;
fn valid_instance(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub struct Service {
    links: Arc<AppLinks>,
    token: BearerToken,
}

type LinkStream = Pin<Box<dyn Stream<Item = Result<pb::HubBatch, Status>> + Send>>;

#[tonic::async_trait]
impl AppLink for Service {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::AppBatch>>,
    ) -> Result<Response<LinkStream>, Status> {
        let metadata = request.metadata();
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !self.token.matches(presented) {
            self.links.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("app link refused: wrong token");
            return Err(Status::unauthenticated("app link token refused"));
        }
        let instance = metadata
            .get(INSTANCE)
            .and_then(|v| v.to_str().ok())
            .filter(|id| valid_instance(id))
            .ok_or_else(|| {
                self.links.stats.refused.fetch_add(1, Ordering::Relaxed);
                Status::invalid_argument(
                    "roomcast-app-instance: 1 to 128 characters of [A-Za-z0-9._-]",
                )
            })?
            .to_string();
        let local_ip = request
            .extensions()
            .get::<PeerConnInfo>()
            .and_then(|c| c.local)
            .map(|a| a.ip());
        let mut inbound = request.into_inner();
        let links = self.links.clone();
        let (link, reader) = links.add_link(instance, local_ip);
        link.send(Kind::Welcome(links.welcome(&link)));
        links.publish_members();

        let reading = {
            let links = links.clone();
            let link = link.clone();
            async move {
                loop {
                    tokio::select! {
                        batch = inbound.message() => match batch {
                            Ok(Some(batch)) => {
                                for message in batch.messages {
                                    super::inbound::handle(&links, &link, message);
                                }
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::info!(instance = %link.instance, %status, "app link stream failed");
                                break;
                            }
                        },
                        _ = link.outbox.overflowed.notified() => {
                            links.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                links.remove_link(&link);
            }
        };
        tokio::spawn(reading);

        // Ends once the link is closed.
        let stream =
            futures_util::stream::unfold((reader, link), |(mut reader, link)| async move {
                let batch = reader.next_batch(&link.outbox).await?;
                Some((Ok(batch), (reader, link)))
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The app link port: the node's peer certificate, no client certificate asked.
static APP_PORT: Port = Port {
    what: "app link",
    total_budget: "appLink.maxConnections",
    per_ip_budget: "appLink.maxConnectionsPerIp",
    server: |m| m.app_server.clone(),
};

/// Binds `appLink.listen` (before the cluster starts: peers learn the address).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (appLink.listen): {e}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves app links on `listener` until the node stops: over TLS with the peer port's
/// material (reloaded with it) when `tls` is given, else plaintext (`appLink.plaintext`).
pub fn serve(
    links: Arc<AppLinks>,
    listener: tokio::net::TcpListener,
    token: BearerToken,
    tls: Option<Arc<PeerTls>>,
) -> tokio::task::JoinHandle<()> {
    let max = links.settings.max_batch_bytes;
    let keepalive = std::time::Duration::from_millis(links.settings.keepalive_interval);
    let limit = ConnLimit::new(
        links.settings.max_connections,
        links.settings.max_connections_per_ip,
    );
    let refused = Refusals {
        handshakes_failed: links.stats.refused.clone(),
        over_limit: links.stats.refused.clone(),
    };
    let service = AppLinkServer::new(Service {
        links: links.clone(),
        token,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max.max(super::outbox::BATCH_BYTES * 2));
    let tcp = crate::cluster::listen::incoming(listener, "app link");
    let incoming = accept(tcp, tls, limit, refused, &APP_PORT);
    tokio::spawn(async move {
        // An instance that vanishes without closing its connection (its node lost, a
        // partition, a frozen process) is noticed by HTTP/2 pings within twice
        // `appLink.keepaliveInterval`, and its clients' sessions are then closed like those of
        // a link that ended.
        if let Err(error) = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive))
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(%error, "app link listener failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!(valid_instance("app-7f3a.1_x"));
        for bad in ["", "a b", "a/b", &"x".repeat(129), "é"] {
            assert!(!valid_instance(bad), "{bad:?}");
        }
    }
}
