//! Test helpers shared by the auth tests: key fixtures, token builders, a JWKS endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::JwtAuthenticator;
use crate::config::JwtConfig;

pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef";
pub(super) const RSA_KEY: &str = include_str!("../../tests/fixtures/jwt/rsa.key.pem");
pub(super) const RSA_PUB: &str = include_str!("../../tests/fixtures/jwt/rsa.pub.pem");
pub(super) const RSA_JWK: &str = include_str!("../../tests/fixtures/jwt/rsa.jwk.json");
pub(super) const RSA2_KEY: &str = include_str!("../../tests/fixtures/jwt/rsa2.key.pem");
pub(super) const RSA2_JWK: &str = include_str!("../../tests/fixtures/jwt/rsa2.jwk.json");
pub(super) const EC_KEY: &str = include_str!("../../tests/fixtures/jwt/ec.key.pem");
pub(super) const EC_PUB: &str = include_str!("../../tests/fixtures/jwt/ec.pub.pem");
pub(super) const EC_JWK: &str = include_str!("../../tests/fixtures/jwt/ec.jwk.json");

pub(super) fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

pub(super) fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "roomcast", "exp": now() + 600})
}

pub(super) fn hs(claims: &Value) -> String {
    hs_with(SECRET, claims)
}

pub(super) fn hs_with(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub(super) fn rs(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub(super) fn es(kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub(super) fn hs_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some(SECRET.into()),
        issuer: Some("https://issuer.test".into()),
        audience: vec!["roomcast".into(), "other".into()],
        ..JwtConfig::default()
    }
}

pub(super) async fn auth(config: JwtConfig) -> JwtAuthenticator {
    JwtAuthenticator::new(&config).await.unwrap()
}

pub(super) async fn reason_of(a: &JwtAuthenticator, token: &str) -> String {
    match a.verify(token).await {
        Ok(claims) => panic!("token accepted: {claims}"),
        Err(f) => {
            assert!(!f.message.is_empty());
            f.reason
        }
    }
}

pub(super) fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

pub(super) fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A JWKS endpoint on 127.0.0.1 whose answer the test changes; counts its requests.
pub(super) struct JwksServer {
    pub(super) url: String,
    pub(super) body: Arc<parking_lot::Mutex<(u16, String)>>,
    pub(super) hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub(super) async fn start(keys: &[(&str, &str)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = Arc::new(parking_lot::Mutex::new((200, jwks(keys))));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = b.lock().clone();
                    let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { url, body, hits }
    }

    pub(super) fn set(&self, status: u16, body: String) {
        *self.body.lock() = (status, body);
    }

    pub(super) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A JWKS document of (kid, JWK JSON) pairs.
pub(super) fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, jwk)| {
            let mut jwk: Value = serde_json::from_str(jwk).unwrap();
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

pub(super) fn jwks_config(url: &str, min_refresh_ms: u64) -> JwtConfig {
    JwtConfig {
        algorithms: vec!["RS256".into(), "ES256".into()],
        jwks_url: Some(url.into()),
        jwks_refresh_interval: 3_600_000,
        jwks_min_refresh_interval: min_refresh_ms,
        ..JwtConfig::default()
    }
}
