//! The JWKS cache: the keys of a JWKS URL, fetched at start, refreshed periodically and on
//! demand when a token names a `kid` the cache does not have (at most once per
//! `jwksMinRefreshInterval`, with concurrent refreshes coalesced).
//!
//! This is the I/O around the keys; parsing the document and picking keys are pure and
//! live in [`super::keys`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use parking_lot::RwLock;
use tokio::time::Instant;

use super::keys::{parse_jwks, select, Alg, Key};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Time one JWKS request may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of looking for the keys of a token.
pub(super) enum Lookup {
    Found(Vec<Arc<DecodingKey>>),
    /// The JWKS is loaded but has no matching key, even after a refresh.
    NotFound,
    /// The JWKS was never fetched successfully.
    Unavailable,
}

/// The keys of a JWKS URL, fetched at start, refreshed periodically and on unknown `kid`s.
pub(super) struct JwksCache {
    pub(super) url: String,
    client: reqwest::Client,
    /// `None` until a fetch succeeds; a failed fetch keeps the previous keys.
    keys: RwLock<Option<Arc<Vec<Key>>>>,
    /// When the last fetch started; held during a fetch so concurrent refreshes coalesce.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
}

impl JwksCache {
    /// Fetches `url` once (a failure is logged, not fatal) and refreshes it every
    /// `refresh_interval` for as long as the cache lives.
    pub(super) async fn start(
        url: String,
        refresh_interval: Duration,
        min_refresh_interval: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("auth.jwt.jwksUrl: cannot build an HTTP client: {e}"))?;
        let cache = Arc::new(Self {
            url,
            client,
            keys: RwLock::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refresh_interval,
        });
        cache.refresh(None).await;
        let weak = Arc::downgrade(&cache);
        tokio::spawn(refresh_periodically(weak, refresh_interval));
        Ok(cache)
    }

    /// Keys for `alg` (only the one named `kid` when given); refreshes once when none match.
    pub(super) async fn lookup(&self, alg: Alg, kid: Option<&str>) -> Lookup {
        let asked = Instant::now();
        if let Some(found) = self.find(alg, kid) {
            return Lookup::Found(found);
        }
        self.refresh(Some(asked)).await;
        match self.find(alg, kid) {
            Some(found) => Lookup::Found(found),
            None if self.keys.read().is_none() => Lookup::Unavailable,
            None => Lookup::NotFound,
        }
    }

    fn find(&self, alg: Alg, kid: Option<&str>) -> Option<Vec<Arc<DecodingKey>>> {
        let keys = self.keys.read().clone()?;
        let found = select(&keys, alg, kid);
        (!found.is_empty()).then_some(found)
    }

    /// Fetches the JWKS. With `asked` (an on-demand refresh for an unknown key) nothing is
    /// fetched when a fetch started after `asked` (its result is already there) or less than
    /// `jwksMinRefreshInterval` ago.
    async fn refresh(&self, asked: Option<Instant>) {
        let mut last = self.last_fetch.lock().await;
        if let (Some(asked), Some(at)) = (asked, *last) {
            if at >= asked || at.elapsed() < self.min_refresh_interval {
                return;
            }
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let count = keys.len();
                let first = self.keys.read().is_none();
                *self.keys.write() = Some(Arc::new(keys));
                if count == 0 {
                    tracing::warn!(url = %self.url, "JWKS has no usable RS256/ES256 key");
                } else if first {
                    tracing::info!(url = %self.url, keys = count, "JWKS loaded");
                } else {
                    tracing::debug!(url = %self.url, keys = count, "JWKS refreshed");
                }
            }
            Err(e) => {
                let kept = self.keys.read().as_ref().map_or(0, |k| k.len());
                tracing::warn!(
                    url = %self.url,
                    error = %e,
                    kept_keys = kept,
                    "JWKS fetch failed; keeping the previous keys"
                );
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let mut response = self
            .client
            .get(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("HTTP status {status}");
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                anyhow::bail!("document larger than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// Refreshes the JWKS every `period` until the authenticator is dropped. A period too long
/// for the clock to schedule (centuries) means no periodic refresh; unknown `kid`s still
/// refresh on demand.
async fn refresh_periodically(cache: Weak<JwksCache>, period: Duration) {
    let now = Instant::now();
    let (Some(start), Some(_)) = (
        now.checked_add(period),
        now.checked_add(period.saturating_mul(2)),
    ) else {
        tracing::warn!(?period, "auth.jwt.jwksRefreshInterval is too long to schedule; the JWKS is only refreshed for unknown keys");
        return;
    };
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.refresh(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::verify::reason;
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn jwks_keys_by_kid() {
        let server = JwksServer::start(&[("r1", RSA_JWK), ("e1", EC_JWK)]).await;
        let a = auth(jwks_config(&server.url, 60_000)).await;
        assert_eq!(server.hits(), 1, "fetched at start");
        assert!(a.verify(&rs(RSA_KEY, Some("r1"), &claims())).await.is_ok());
        assert!(a.verify(&es(Some("e1"), &claims())).await.is_ok());
        assert!(
            a.verify(&rs(RSA_KEY, None, &claims())).await.is_ok(),
            "no kid"
        );
        // right kid, wrong key
        assert_eq!(
            reason_of(&a, &rs(RSA2_KEY, Some("r1"), &claims())).await,
            reason::BAD_SIGNATURE
        );
        // the kid of an EC key on an RS256 token
        assert_eq!(
            reason_of(&a, &rs(RSA_KEY, Some("e1"), &claims())).await,
            reason::UNKNOWN_KEY
        );
        // unknown kid: one refresh, then rate limited
        assert_eq!(
            reason_of(&a, &rs(RSA2_KEY, Some("r2"), &claims())).await,
            reason::UNKNOWN_KEY
        );
        assert_eq!(
            reason_of(&a, &rs(RSA2_KEY, Some("r3"), &claims())).await,
            reason::UNKNOWN_KEY
        );
        assert_eq!(
            server.hits(),
            1,
            "within jwksMinRefreshInterval of the start"
        );
        // claims are still checked
        let expired = with(claims(), "exp", json!(now() - 5));
        assert_eq!(
            reason_of(&a, &rs(RSA_KEY, Some("r1"), &expired)).await,
            reason::TOKEN_EXPIRED
        );
    }

    #[tokio::test]
    async fn jwks_rotation_is_picked_up_at_most_once_per_interval() {
        let server = JwksServer::start(&[("r1", RSA_JWK)]).await;
        let a = Arc::new(auth(jwks_config(&server.url, 1_000)).await);
        server.set(200, jwks(&[("r1", RSA_JWK), ("r2", RSA2_JWK)]));
        // too early after the initial fetch
        assert_eq!(
            reason_of(&a, &rs(RSA2_KEY, Some("r2"), &claims())).await,
            reason::UNKNOWN_KEY
        );
        assert_eq!(server.hits(), 1);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        // many concurrent unknown-kid handshakes share one fetch
        let token = rs(RSA2_KEY, Some("r2"), &claims());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (a, token) = (a.clone(), token.clone());
                tokio::spawn(async move { a.verify(&token).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap()["sub"], "alice");
        }
        assert_eq!(server.hits(), 2);
        // unknown kids right after: no fetch; later: one fetch
        for kid in ["x", "y", "z"] {
            assert_eq!(
                reason_of(&a, &rs(RSA2_KEY, Some(kid), &claims())).await,
                reason::UNKNOWN_KEY
            );
        }
        assert_eq!(server.hits(), 2);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        for kid in ["x", "y", "z"] {
            assert_eq!(
                reason_of(&a, &rs(RSA2_KEY, Some(kid), &claims())).await,
                reason::UNKNOWN_KEY
            );
        }
        assert_eq!(server.hits(), 3, "one refresh for x, y and z");
    }

    #[tokio::test]
    async fn jwks_failures_keep_the_old_keys() {
        let server = JwksServer::start(&[("r1", RSA_JWK)]).await;
        let a = auth(jwks_config(&server.url, 50)).await;
        for broken in [(500, "oops".to_string()), (200, "{not json".to_string())] {
            server.set(broken.0, broken.1);
            tokio::time::sleep(Duration::from_millis(80)).await;
            assert_eq!(
                reason_of(&a, &rs(RSA2_KEY, Some("r2"), &claims())).await,
                reason::UNKNOWN_KEY
            );
            assert!(a.verify(&rs(RSA_KEY, Some("r1"), &claims())).await.is_ok());
        }
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn jwks_down_at_start_then_up() {
        let server = JwksServer::start(&[("r1", RSA_JWK)]).await;
        server.set(503, "down".into());
        let a = auth(jwks_config(&server.url, 50)).await;
        assert_eq!(
            reason_of(&a, &rs(RSA_KEY, Some("r1"), &claims())).await,
            reason::JWKS_UNAVAILABLE
        );
        server.set(200, jwks(&[("r1", RSA_JWK)]));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(a.verify(&rs(RSA_KEY, Some("r1"), &claims())).await.is_ok());
        // nothing listening at all
        let gone = auth(jwks_config("http://127.0.0.1:9/jwks.json", 50)).await;
        assert_eq!(
            reason_of(&gone, &rs(RSA_KEY, Some("r1"), &claims())).await,
            reason::JWKS_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn jwks_is_refreshed_periodically() {
        let server = JwksServer::start(&[("r1", RSA_JWK)]).await;
        let mut config = jwks_config(&server.url, 50);
        config.jwks_refresh_interval = 100;
        let a = auth(config).await;
        server.set(200, jwks(&[("r2", RSA2_JWK)]));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(server.hits() >= 2);
        // r1 is gone from the set without any unknown-kid refresh
        assert_eq!(
            reason_of(&a, &rs(RSA_KEY, Some("r1"), &claims())).await,
            reason::UNKNOWN_KEY
        );
        assert!(a.verify(&rs(RSA2_KEY, Some("r2"), &claims())).await.is_ok());
        drop(a);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let after_drop = server.hits();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            server.hits(),
            after_drop,
            "refresher stops with the authenticator"
        );
    }
}
