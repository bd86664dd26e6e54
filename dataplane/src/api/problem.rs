//! Errors as RFC 9457 problem details (`application/problem+json`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ops::OpsError;

/// Base of the `type` URIs of the problems this API answers with.
pub const TYPE_BASE: &str = "https://roomcast.dev/problems/";

/// The kinds of problem, each with its own `type` URI, title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 401: no bearer token, or not the right one.
    Unauthorized,
    /// 404: no such route.
    NotFound,
    /// 404: the namespace is not one the hub's configuration allows.
    UnknownNamespace,
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 400: the body is not JSON, or not of the expected shape.
    InvalidJson,
    /// 400: well-formed input that breaks a rule (empty event name, bad timeout, ...).
    InvalidRequest,
    /// 413: the body is larger than `management.maxBodyBytes`.
    PayloadTooLarge,
    /// 415: the body is declared as something other than JSON.
    UnsupportedMediaType,
    /// 500: the hub failed.
    Internal,
    /// 503: a node the request needs is not reachable from the serving one right now.
    Unavailable,
}

impl Kind {
    /// Every kind, for the documentation.
    pub const ALL: [Kind; 10] = [
        Kind::Unauthorized,
        Kind::NotFound,
        Kind::UnknownNamespace,
        Kind::MethodNotAllowed,
        Kind::InvalidJson,
        Kind::InvalidRequest,
        Kind::PayloadTooLarge,
        Kind::UnsupportedMediaType,
        Kind::Internal,
        Kind::Unavailable,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not-found",
            Kind::UnknownNamespace => "unknown-namespace",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::InvalidJson => "invalid-json",
            Kind::InvalidRequest => "invalid-request",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::Internal => "internal",
            Kind::Unavailable => "unavailable",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Unauthorized => "Missing or invalid bearer token",
            Kind::NotFound => "No such resource",
            Kind::UnknownNamespace => "Unknown namespace",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::InvalidJson => "Malformed JSON body",
            Kind::InvalidRequest => "Invalid request",
            Kind::PayloadTooLarge => "Request body too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::Internal => "Internal error",
            Kind::Unavailable => "Node unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::NotFound | Kind::UnknownNamespace => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::InvalidJson | Kind::InvalidRequest => StatusCode::BAD_REQUEST,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn type_uri(self) -> String {
        format!("{TYPE_BASE}{}", self.slug())
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "Problem",
    description = "RFC 9457 problem details; the `type` URI names the kind of error."
)]
pub struct Problem {
    /// URI naming the kind of problem, e.g. `https://roomcast.dev/problems/unknown-namespace`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary, the same for every problem of this type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.type_uri(),
            title: kind.title().to_string(),
            status: kind.status().as_u16(),
            detail: detail.into(),
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(Kind::InvalidRequest, detail)
    }
}

impl From<OpsError> for Problem {
    fn from(error: OpsError) -> Self {
        match error {
            OpsError::UnknownNamespace(nsp) => Problem::new(
                Kind::UnknownNamespace,
                format!("namespace {nsp:?} is not configured on this hub"),
            ),
            OpsError::Invalid(reason) => Problem::invalid(reason),
            OpsError::Unavailable(member) => Problem::new(
                Kind::Unavailable,
                format!(
                    "socket ids of the request live on member {member:?}, which this node has \
                     no link to right now; retry shortly"
                ),
            ),
            OpsError::Unconfirmed { member, why } => Problem::new(
                Kind::Unavailable,
                format!(
                    "member {member:?} did not confirm the operation ({why}); it may have been \
                     applied on some nodes only; retry (it is idempotent)"
                ),
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"roomcast-management\""),
            );
        }
        res
    }
}
