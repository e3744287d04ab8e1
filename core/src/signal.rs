//! Signaling messages as plain values, with a stable text encoding any transport can carry.
//!
//! # Text encoding
//! A signal is UTF-8 text: a first line naming the kind, a line feed, then the body, verbatim.
//!
//! | kind | body |
//! |---|---|
//! | `offer` | the SDP offer (`v=0` …) |
//! | `answer` | the SDP answer |
//! | `candidate` | one ICE candidate attribute (`candidate:…`, as in SDP `a=` without `a=`) |
//!
//! For example `"candidate\ncandidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"`. The
//! encoding is at most [`Signal::MAX_ENCODED_LEN`] bytes; longer input is refused.

use std::fmt;
use std::str::FromStr;

use crate::error::DecodeSignalError;
use crate::transfer::PeerId;

/// One signaling message between two peers (the caller carries it; rtcmesh produces and consumes it).
///
/// ```
/// use rtcmesh::Signal;
///
/// let signal = Signal::Candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into());
/// let text = signal.encode(); // "candidate\ncandidate:1 1 udp …": one text frame of your transport
/// assert!(text.starts_with("candidate\n"));
/// assert_eq!(Signal::decode(&text)?, signal);
/// # Ok::<(), rtcmesh::DecodeSignalError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Signal {
    /// An SDP offer, made by the side with the larger peer id.
    Offer(String),
    /// The SDP answer to an offer.
    Answer(String),
    /// A trickled ICE candidate (`candidate:…`).
    Candidate(String),
}

impl Signal {
    /// The longest encoded signal accepted by [`Signal::decode`] (64 KiB).
    pub const MAX_ENCODED_LEN: usize = 64 * 1024;

    /// The kind word used on the first line of the text encoding.
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Offer(_) => "offer",
            Signal::Answer(_) => "answer",
            Signal::Candidate(_) => "candidate",
        }
    }

    /// The body: SDP text or candidate attribute.
    pub fn body(&self) -> &str {
        match self {
            Signal::Offer(s) | Signal::Answer(s) | Signal::Candidate(s) => s,
        }
    }

    /// Encodes as `"<kind>\n<body>"` (see the module docs).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.kind().len() + 1 + self.body().len());
        out.push_str(self.kind());
        out.push('\n');
        out.push_str(self.body());
        out
    }

    /// Decodes the text encoding. Only the shape is checked here; SDP and candidate syntax is
    /// checked when the signal is handed to a mesh.
    pub fn decode(text: &str) -> Result<Signal, DecodeSignalError> {
        if text.len() > Self::MAX_ENCODED_LEN {
            return Err(DecodeSignalError::TooLong(text.len()));
        }
        let (kind, body) = text.split_once('\n').unwrap_or((text, ""));
        let kind = kind.trim_end_matches('\r');
        let make: fn(String) -> Signal = match kind {
            "offer" => Signal::Offer,
            "answer" => Signal::Answer,
            "candidate" => Signal::Candidate,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(DecodeSignalError::UnknownKind(shown));
            }
        };
        if body.trim().is_empty() {
            return Err(DecodeSignalError::MissingBody);
        }
        Ok(make(body.to_owned()))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        f.write_str("\n")?;
        f.write_str(self.body())
    }
}

impl FromStr for Signal {
    type Err = DecodeSignalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::decode(s)
    }
}

/// A signal this mesh wants delivered to `to` (emitted as [`Event::Signal`](crate::Event::Signal)).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Event, Mesh, MeshConfig, Signal};
///
/// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// mesh.add_peer(Instant::now(), 1, 1)?;
/// if let Some(Event::Signal(outgoing)) = mesh.poll_event() {
///     assert_eq!(outgoing.to, 1); // deliver `outgoing.signal` to peer 1, which calls handle_signal
///     assert!(matches!(outgoing.signal, Signal::Offer(_)));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSignal {
    /// The peer the signal is for.
    pub to: PeerId,
    /// The signal itself.
    pub signal: Signal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_kind_then_body() {
        let s = Signal::Candidate("candidate:1 1 udp 1 127.0.0.1 5000 typ host".into());
        assert_eq!(
            s.encode(),
            "candidate\ncandidate:1 1 udp 1 127.0.0.1 5000 typ host"
        );
        assert_eq!(s.to_string(), s.encode());
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(
            Signal::decode("hello\nworld"),
            Err(DecodeSignalError::UnknownKind("hello".into()))
        );
        assert_eq!(Signal::decode("offer"), Err(DecodeSignalError::MissingBody));
        assert_eq!(
            Signal::decode("offer\n  "),
            Err(DecodeSignalError::MissingBody)
        );
        let long = format!("offer\n{}", "x".repeat(Signal::MAX_ENCODED_LEN));
        assert!(matches!(
            Signal::decode(&long),
            Err(DecodeSignalError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trips(kind in 0..3u8, body in "[^\r]{0,200}[a-z]") {
            let s = match kind { 0 => Signal::Offer(body), 1 => Signal::Answer(body), _ => Signal::Candidate(body) };
            prop_assert_eq!(Signal::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn never_panics(text in ".{0,300}") {
            let _ = Signal::decode(&text);
        }
    }
}
