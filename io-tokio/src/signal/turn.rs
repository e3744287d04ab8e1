//! Short-lived TURN credentials for members (coturn's `use-auth-secret` scheme, the "TURN REST
//! API"): username `"<expiry unix seconds>:<member>"`, password `base64(HMAC-SHA1(secret,
//! username))`. The TURN server checks them with the same shared secret, so the secret never
//! leaves the two servers and a credential is worth nothing after its expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use rtcmesh::lobby::{LobbyMessage, MessageKind};
use sha1::Sha1;

/// Credentials are sent again this long before they expire (a quarter of the TTL).
const REMINT_BEFORE: u32 = 4;

/// How members get short-lived TURN credentials (coturn's `use-auth-secret` /
/// `static-auth-secret`). A connection that opts in (`?turn=1` in its WebSocket URL, as
/// `rtcmesh_tokio::join` does) gets a TURN_CREDENTIALS frame (lobby message type 12) when it
/// connects, fresh ones before they expire, and fresh ones when it asks (a type-12 frame from
/// it, at most `requests_per_minute`). Plain Godot and browser clients never get one.
///
/// ```
/// use std::time::Duration;
/// use rtcmesh_tokio::{SignalConfig, TurnSecret};
///
/// let turn = TurnSecret::new("the coturn static-auth-secret", vec!["turn:turn.example.org:3478".into()])
///     .with_ttl(Duration::from_secs(3600));
/// assert!(!format!("{turn:?}").contains("static-auth-secret")); // Debug hides the secret
/// let config = SignalConfig::default().with_turn(Some(turn));
/// # let _ = config;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct TurnSecret {
    /// The secret shared with the TURN server (coturn's `static-auth-secret`). Never logged.
    pub secret: String,
    /// How long a minted credential is valid (default 1 hour).
    pub ttl: Duration,
    /// The TURN server URLs the credentials are for (`turn:host:port`).
    pub urls: Vec<String>,
    /// Requests for fresh credentials answered per connection and minute (default 6); more
    /// are ignored.
    pub requests_per_minute: u32,
}

impl TurnSecret {
    /// Credentials for these TURN servers, signed with `secret`, valid one hour.
    pub fn new(secret: impl Into<String>, urls: Vec<String>) -> TurnSecret {
        TurnSecret {
            secret: secret.into(),
            ttl: Duration::from_secs(3600),
            urls,
            requests_per_minute: 6,
        }
    }

    /// When a credential minted now should be replaced.
    pub(crate) fn remint_after(&self) -> Duration {
        self.ttl - self.ttl / REMINT_BEFORE
    }

    /// A TURN_CREDENTIALS frame for `member`, valid `ttl` from `now`.
    pub(crate) fn frame(&self, member: &str, now: SystemTime) -> String {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // Whole seconds, as coturn reads them; at least one.
        let ttl = self.ttl.as_secs().max(1);
        let (username, credential) = mint(&self.secret, now + ttl, member);
        let data = serde_json::json!({
            "urls": self.urls,
            "username": username,
            "credential": credential,
            "ttl": ttl,
        });
        LobbyMessage::new(MessageKind::TurnCredentials, 0, data.to_string()).encode()
    }
}

rtcmesh::__config_setters!(TurnSecret {
    with_secret => secret: String,
    with_ttl => ttl: Duration,
    with_urls => urls: Vec<String>,
    with_requests_per_minute => requests_per_minute: u32,
});

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSecret")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("urls", &self.urls)
            .field("requests_per_minute", &self.requests_per_minute)
            .finish()
    }
}

/// coturn's REST credential: (`"<expiry>:<member>"`, base64 HMAC-SHA1 of it under `secret`).
pub(crate) fn mint(secret: &str, expiry: u64, member: &str) -> (String, String) {
    let username = format!("{expiry}:{member}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// Whether a client's frame asks for fresh credentials (`{"type": 12, ...}`).
pub(crate) fn is_request(text: &str) -> bool {
    LobbyMessage::decode(text).is_ok_and(|m| m.kind == MessageKind::TurnCredentials)
}

/// Whether a WebSocket request target opts in (`turn=1` or `turn=true` in its query).
pub(crate) fn wanted(target: &str) -> bool {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .any(|pair| matches!(pair, "turn=1" | "turn=true"))
}

/// Per-connection allowance of requests: `per_minute`, refilled continuously.
#[derive(Debug)]
pub(crate) struct Allowance {
    tokens: f64,
    at: std::time::Instant,
}

impl Allowance {
    pub(crate) fn new(per_minute: u32, now: std::time::Instant) -> Allowance {
        Allowance {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    pub(crate) fn take(&mut self, per_minute: u32, now: std::time::Instant) -> bool {
        let per_second = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(per_minute));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_coturn_s_rest_scheme() {
        // base64(HMAC-SHA1("north", "1767225600:7f3a")), computed with Python's hmac module.
        let (username, password) = mint("north", 1_767_225_600, "7f3a");
        assert_eq!(username, "1767225600:7f3a");
        assert_eq!(password, "QK0G7535IN1hpAshY5eXhS/bK/o=");
    }

    #[test]
    fn the_frame_is_one_the_lobby_client_reads_and_expires_after_the_ttl() {
        let turn = TurnSecret::new("north", vec!["turn:127.0.0.1:3478".into()])
            .with_ttl(Duration::from_secs(600));
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let frame = turn.frame("a1", now);
        assert!(!frame.contains("north"));
        let mut client = rtcmesh::lobby::LobbyClient::new("", true);
        match client.handle_text(&frame) {
            Ok(rtcmesh::lobby::LobbyEvent::TurnCredentials { server, ttl }) => {
                assert_eq!(server.urls, vec!["turn:127.0.0.1:3478".to_string()]);
                assert_eq!(server.username, "1000600:a1");
                assert_eq!(server.credential, mint("north", 1_000_600, "a1").1);
                assert_eq!(ttl, Duration::from_secs(600));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(turn.remint_after(), Duration::from_secs(450));
    }

    #[test]
    fn only_turn_1_opts_in_and_requests_are_limited_per_minute() {
        assert!(wanted("/?turn=1"));
        assert!(wanted("/lobby?migrate=1&turn=true"));
        assert!(!wanted("/?turn=0"));
        assert!(!wanted("/?return=1"));
        assert!(!wanted("/turn=1"));
        let start = std::time::Instant::now();
        let mut allowance = Allowance::new(2, start);
        assert!(allowance.take(2, start));
        assert!(allowance.take(2, start));
        assert!(!allowance.take(2, start));
        assert!(allowance.take(2, start + Duration::from_secs(30)));
        assert!(is_request(r#"{"type": 12, "id": 0, "data": ""}"#));
        assert!(!is_request(r#"{"type": 4, "id": 1, "data": ""}"#));
    }
}
