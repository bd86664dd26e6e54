//! What every HTTP answer of the engine is made of: the body type, the Engine.IO error
//! answers and the CORS headers.
//!
//! Below the router and the transports, which all answer requests: with these shared types
//! in a module of their own, the router uses the transports and never the reverse.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::settings::EngineSettings;

pub type Body = Full<Bytes>;

/// Engine.IO error answers: (code, message), as the reference server sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl EngineError {
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Builds a response with the CORS headers this request deserves.
pub struct Responder {
    cors: Option<(HeaderValue, bool)>,
}

impl Responder {
    pub fn new(settings: &EngineSettings, headers: &HeaderMap) -> Self {
        let s = settings;
        let origin = headers.get(header::ORIGIN);
        let cors = match origin {
            Some(origin) if !s.cors_origins.is_empty() => {
                let any = s.cors_origins.iter().any(|o| o == "*");
                let listed = origin
                    .to_str()
                    .is_ok_and(|o| s.cors_origins.iter().any(|allowed| allowed == o));
                if any && !s.cors_credentials {
                    Some((HeaderValue::from_static("*"), false))
                } else if any || listed {
                    Some((origin.clone(), s.cors_credentials))
                } else {
                    None
                }
            }
            _ => None,
        };
        Self { cors }
    }

    pub fn build(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response<Body> {
        let mut res = Response::new(Full::new(body.into()));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some((origin, credentials)) = &self.cors {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if origin != "*" {
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            if *credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        res
    }

    pub fn error(&self, error: EngineError) -> Response<Body> {
        let body = format!(
            r#"{{"code":{},"message":"{}"}}"#,
            error.code(),
            error.message()
        );
        self.build(error.status(), "application/json", body)
    }

    pub fn status_json(&self, status: StatusCode, code: u8, message: &str) -> Response<Body> {
        let body = serde_json::json!({ "code": code, "message": message }).to_string();
        self.build(status, "application/json", body)
    }

    pub(super) fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut res = self.build(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            h.insert(
                header::VARY,
                HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
            );
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_match_reference() {
        assert_eq!(EngineError::UnknownSid.code(), 1);
        assert_eq!(
            EngineError::UnsupportedProtocolVersion.message(),
            "Unsupported protocol version"
        );
    }
}
