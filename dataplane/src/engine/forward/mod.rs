//! No sticky sessions: Engine.IO requests for a session another node owns are forwarded to
//! that node (the owner is named by the session id). Plain HTTP requests are proxied with
//! hyper; WebSocket upgrades are upgraded on both sides and the bytes spliced.
//!
//! The engine does not know the cluster: a [`SessionRouter`] tells it where a member serves
//! clients. A forwarded request carries [`HOP_HEADER`], and a node never forwards such a
//! request again (it answers as for an unknown session), so a stale route cannot loop.
//!
//! Three jobs, bottom up: [`route`] decides where a request goes (pure), `pool` keeps idle
//! connections to owners for reuse, and `proxy` relays requests, answers and upgraded
//! connections. This file holds only what they share.

use std::time::Duration;

pub(super) mod pool;
pub(super) mod proxy;
pub mod route;

pub use proxy::splice;
pub use route::{decide, is_forwarded, Route, SessionRouter, HOP_HEADER};

/// How long a connection to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a forward failed (logged; the client gets a 502 or 413).
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("cannot connect to the owner: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no connection to the owner within {0:?}")]
    ConnectTimeout(Duration),
    #[error("http exchange with the owner failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer from the owner within {0:?}")]
    AnswerTimeout(Duration),
    #[error("cannot build the request for the owner: {0}")]
    Build(#[from] http::Error),
    #[error("the request body is over maxHttpBufferSize")]
    TooLarge,
    #[error("the owner's answer is over {0} bytes or broken")]
    Answer(usize),
}
