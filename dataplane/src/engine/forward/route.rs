//! Where the requests of a session are served: here, at the member that owns it, or nowhere.
//! Pure: the decision reads the session id, this node's id and the hop mark.

use std::net::SocketAddr;

use http::HeaderMap;

use crate::engine::sid;

/// Marks a request one node forwarded to another; its value is the forwarding node's id.
pub const HOP_HEADER: &str = "x-roomcast-forwarded";

/// Where a session's requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Here.
    Local,
    /// At the member serving clients on this address.
    Forward(SocketAddr),
    /// Nowhere reachable: answered as an unknown session.
    Unknown,
}

/// Tells the engine where a member of the cluster serves clients.
pub trait SessionRouter: Send + Sync {
    /// The route to the sessions that member `owner` owns.
    fn route(&self, owner: &str) -> Route;
}

/// The route of a request for session `sid` arriving at member `me`. A request already
/// forwarded once is only served by the owner itself.
pub fn decide(sid: &str, me: &str, forwarded: bool, router: Option<&dyn SessionRouter>) -> Route {
    let Some(owner) = sid::owner_of(sid) else {
        // Not a sid this cluster made: the local lookup answers it as unknown.
        return Route::Local;
    };
    if owner == me {
        return Route::Local;
    }
    if forwarded {
        return Route::Unknown;
    }
    match router {
        Some(router) => router.route(&owner),
        // A single node: only its own sessions exist.
        None => Route::Unknown,
    }
}

/// Whether another node already forwarded this request.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(HOP_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table;

    impl SessionRouter for Table {
        fn route(&self, owner: &str) -> Route {
            match owner {
                "hub-1" => Route::Forward(SocketAddr::from(([127, 0, 0, 12], 3000))),
                _ => Route::Unknown,
            }
        }
    }

    fn sid_of(node: &str) -> String {
        sid::SidGenerator::new(node).session_id()
    }

    #[test]
    fn router_decisions() {
        let router: &dyn SessionRouter = &Table;
        let at_hub1 = Route::Forward(SocketAddr::from(([127, 0, 0, 12], 3000)));
        assert_eq!(
            decide(&sid_of("hub-0"), "hub-0", false, Some(router)),
            Route::Local
        );
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", false, Some(router)),
            at_hub1
        );
        // Forwarded once: only the owner serves it, never a second hop.
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", true, Some(router)),
            Route::Unknown
        );
        assert_eq!(
            decide(&sid_of("hub-0"), "hub-0", true, Some(router)),
            Route::Local
        );
        assert_eq!(
            decide(&sid_of("hub-9"), "hub-0", false, Some(router)),
            Route::Unknown
        );
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", false, None),
            Route::Unknown
        );
        // Garbage ids fall through to the local table, which does not know them either.
        assert_eq!(decide("short", "hub-0", false, Some(router)), Route::Local);
        assert_eq!(
            decide("AAAAAAAAAAAAAAAA%%%", "hub-0", false, Some(router)),
            Route::Local
        );
    }

    #[test]
    fn the_hop_mark_is_the_forwarded_flag() {
        let mut h = HeaderMap::new();
        assert!(!is_forwarded(&h));
        h.insert(HOP_HEADER, http::HeaderValue::from_static("hub-0"));
        assert!(is_forwarded(&h));
    }
}
