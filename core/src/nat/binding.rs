//! One STUN Binding request at a time to one server: the mesh's public (server-reflexive)
//! address as that server sees it, retransmitted per RFC 8489 and repeated every
//! [`RECHECK_INTERVAL`] so a changed NAT mapping is noticed and the mapping stays open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_client_proto::stun::types::attribute::{ErrorCode, XorMappedAddress};
use turn_client_proto::stun::types::message::{
    Message, MessageClass, MessageWriteVec, TransactionId, BINDING,
};
use turn_client_proto::stun::types::prelude::{MessageWrite, MessageWriteExt};

/// First retransmission timeout (RFC 8489 §6.2.1: 500 ms, doubling).
pub(super) const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Transmissions of one request before it is given up (RFC 8489's `Rc` is 7, which waits
/// 39.5 s; four take 5 s, so an unreachable server is reported within seconds).
pub(super) const TRANSMISSIONS: u32 = 4;
/// The wait after the last transmission before the request is given up.
pub(super) const FINAL_WAIT: Duration = Duration::from_millis(1500);
/// How often the mapping is checked again once known: under the 30 s a typical NAT keeps an
/// idle UDP mapping, so the mapping (and a TURN allocation behind it) stays open.
pub(super) const RECHECK_INTERVAL: Duration = Duration::from_secs(15);
/// How long after a failed request the next one goes out.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(15);

/// What a response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindingOutcome {
    /// The server sees us at this address.
    Mapped(SocketAddr),
    /// An error response with this code.
    Refused(u16),
}

#[derive(Debug)]
enum State {
    /// The next request goes out at this time.
    Idle(Instant),
    /// A request is in flight: its transaction, how often it was sent, when it is due again
    /// (or given up, after the last transmission).
    Waiting {
        transaction: TransactionId,
        request: Vec<u8>,
        sent: u32,
        next: Instant,
    },
}

/// The Binding transaction with one server.
#[derive(Debug)]
pub(super) struct Binding {
    state: State,
    /// The last address the server reported.
    pub mapped: Option<SocketAddr>,
}

impl Binding {
    /// A binding whose first request goes out at `now`.
    pub fn new(now: Instant) -> Binding {
        Binding {
            state: State::Idle(now),
            mapped: None,
        }
    }

    /// When [`poll`](Binding::poll) must next be called.
    pub fn deadline(&self) -> Instant {
        match self.state {
            State::Idle(at) => at,
            State::Waiting { next, .. } => next,
        }
    }

    /// Sends a request now unless one is in flight (something suggests the mapping changed).
    pub fn recheck(&mut self, now: Instant) {
        if let State::Idle(at) = &mut self.state {
            *at = (*at).min(now);
        }
    }

    /// Advances to `now`: returns a request to send, and whether the in-flight request was just
    /// given up (the server did not answer).
    pub fn poll(&mut self, now: Instant) -> (Option<Vec<u8>>, bool) {
        match &mut self.state {
            State::Idle(at) if *at <= now => {
                let msg = Message::builder_request(BINDING, MessageWriteVec::new());
                let transaction = msg.transaction_id();
                let request = msg.finish();
                self.state = State::Waiting {
                    transaction,
                    request: request.clone(),
                    sent: 1,
                    next: now + INITIAL_RTO,
                };
                (Some(request), false)
            }
            State::Waiting {
                request,
                sent,
                next,
                ..
            } if *next <= now => {
                if *sent >= TRANSMISSIONS {
                    self.state = State::Idle(now + RETRY_INTERVAL);
                    return (None, true);
                }
                *next = now
                    + if *sent + 1 == TRANSMISSIONS {
                        FINAL_WAIT
                    } else {
                        INITIAL_RTO * (1 << *sent)
                    };
                *sent += 1;
                // The same bytes: a late answer to an earlier copy still counts.
                (Some(request.clone()), false)
            }
            _ => (None, false),
        }
    }

    /// Whether `msg` answers the request in flight; if so, its outcome. The next request is
    /// scheduled [`RECHECK_INTERVAL`] (or [`RETRY_INTERVAL`]) later.
    pub fn handle_response(&mut self, now: Instant, msg: &Message<'_>) -> Option<BindingOutcome> {
        let State::Waiting { transaction, .. } = &self.state else {
            return None;
        };
        let transaction = *transaction;
        if msg.transaction_id() != transaction || !msg.has_method(BINDING) || !msg.is_response() {
            return None;
        }
        let outcome = if msg.has_class(MessageClass::Success) {
            let mapped = msg.attribute::<XorMappedAddress>().ok()?;
            let mapped = mapped.addr(transaction);
            self.mapped = Some(mapped);
            self.state = State::Idle(now + RECHECK_INTERVAL);
            BindingOutcome::Mapped(mapped)
        } else {
            let code = msg.attribute::<ErrorCode>().map_or(0, |e| e.code());
            self.state = State::Idle(now + RETRY_INTERVAL);
            BindingOutcome::Refused(code)
        };
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_per_rfc_8489_then_gives_up_within_seconds() {
        let t0 = Instant::now();
        let mut b = Binding::new(t0);
        let (first, _) = b.poll(t0);
        let first = first.expect("request");
        let id = Message::from_bytes(&first).expect("stun").transaction_id();
        let mut sent_at = vec![Duration::ZERO];
        let gave_up = loop {
            let now = b.deadline();
            match b.poll(now) {
                (Some(again), _) => {
                    let msg = Message::from_bytes(&again).expect("stun");
                    assert_eq!(
                        msg.transaction_id(),
                        id,
                        "a retransmission keeps the transaction"
                    );
                    sent_at.push(now - t0);
                }
                (None, true) => break now - t0,
                (None, false) => panic!("poll at the deadline did nothing"),
            }
        };
        let ms: Vec<u128> = sent_at.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 500, 1500, 3500]);
        assert_eq!(gave_up, Duration::from_millis(5000));
        assert_eq!(b.deadline(), t0 + gave_up + RETRY_INTERVAL);
    }

    #[test]
    fn a_success_response_gives_the_mapped_address() {
        let t0 = Instant::now();
        let mut b = Binding::new(t0);
        let request = b.poll(t0).0.expect("request");
        let request = Message::from_bytes(&request).expect("stun");
        let mapped: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
        let mut response = Message::builder_success(&request, MessageWriteVec::new());
        response
            .add_attribute(&XorMappedAddress::new(mapped, request.transaction_id()))
            .expect("attribute");
        let response = response.finish();
        let response = Message::from_bytes(&response).expect("stun");
        let later = t0 + Duration::from_millis(30);
        assert_eq!(
            b.handle_response(later, &response),
            Some(BindingOutcome::Mapped(mapped))
        );
        assert_eq!(b.mapped, Some(mapped));
        assert_eq!(b.deadline(), later + RECHECK_INTERVAL);
        assert_eq!(b.handle_response(later, &response), None, "answered once");
    }
}
