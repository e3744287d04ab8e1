//! One connection's outbound queue, bounded in bytes and in messages.
//!
//! The server loop pushes into it without ever waiting; the connection's writer drains it as
//! fast as the socket takes frames. A push that would pass either bound fails, and the server
//! closes that connection as a slow reader: a client that does not read its socket costs at
//! most the bound, never more.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// How much one connection may have waiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub bytes: usize,
    pub messages: usize,
}

/// What the writer does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Text(String),
    Ping,
    /// Send this close frame, then stop.
    Close(u16, &'static str),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<String>,
    bytes: usize,
    ping: bool,
    close: Option<(u16, &'static str)>,
}

/// The queue between the server loop and one connection's writer.
#[derive(Debug)]
pub(crate) struct Outbox {
    bounds: Bounds,
    state: Mutex<State>,
    /// Wakes the writer (one consumer, so a stored permit never gets lost).
    ready: Notify,
    /// Wakes a writer blocked on a slow socket when a close is requested.
    closing: Notify,
}

/// The push would have passed a bound: the connection reads too slowly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Messages that were waiting, dropped with the connection.
    pub dropped: usize,
}

impl Outbox {
    pub fn new(bounds: Bounds) -> Outbox {
        Outbox {
            bounds,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is
        // a single push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a text frame. On overflow nothing is queued, the waiting messages are dropped
    /// and the caller must [`close`](Outbox::close) the connection.
    pub fn push(&self, text: String) -> Result<(), Overflow> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Ok(()); // closing anyway; the frame would never be sent
        }
        let bytes = state.bytes + text.len();
        if bytes > self.bounds.bytes || state.queue.len() >= self.bounds.messages {
            let dropped = state.queue.len() + 1;
            state.queue = VecDeque::new();
            state.bytes = 0;
            return Err(Overflow { dropped });
        }
        state.bytes = bytes;
        state.queue.push_back(text);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Asks the writer for a ping ahead of the queued frames.
    pub fn ping(&self) {
        self.lock().ping = true;
        self.ready.notify_one();
    }

    /// Has the writer send this close frame after what is already queued (as the reference
    /// server does: an error reply's preceding frames still arrive). The first close wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some((code, reason));
        }
        drop(state);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The writer's next frame, waiting until there is one: a ping first, then the queue, then
    /// the close frame.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut state = self.lock();
                if std::mem::take(&mut state.ping) && state.close.is_none() {
                    return Next::Ping;
                }
                if let Some(text) = state.queue.pop_front() {
                    state.bytes -= text.len();
                    return Next::Text(text);
                }
                if let Some((code, reason)) = state.close {
                    return Next::Close(code, reason);
                }
            }
            self.ready.notified().await;
        }
    }

    /// Resolves once a close is requested (to abandon a write stuck on a slow socket).
    pub async fn closed(&self) {
        loop {
            if self.is_closing() {
                return;
            }
            self.closing.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(bytes: usize, messages: usize) -> Bounds {
        Bounds { bytes, messages }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_with_pings_first() {
        let outbox = Outbox::new(bounds(100, 10));
        outbox.push("a".into()).expect("fits");
        outbox.push("b".into()).expect("fits");
        outbox.ping();
        assert_eq!(outbox.next().await, Next::Ping);
        assert_eq!(outbox.next().await, Next::Text("a".into()));
        assert_eq!(outbox.queued_bytes(), 1);
        assert_eq!(outbox.next().await, Next::Text("b".into()));
    }

    #[tokio::test]
    async fn a_push_past_either_bound_fails_and_drops_what_waits() {
        let outbox = Outbox::new(bounds(10, 3));
        outbox.push("12345".into()).expect("fits");
        assert_eq!(outbox.push("123456".into()), Err(Overflow { dropped: 2 }));
        assert_eq!(outbox.queued_bytes(), 0);
        for _ in 0..3 {
            outbox.push("x".into()).expect("fits");
        }
        assert_eq!(outbox.push("x".into()), Err(Overflow { dropped: 4 }));
    }

    #[tokio::test]
    async fn close_follows_the_queue_and_the_first_one_wins() {
        let outbox = Outbox::new(bounds(100, 10));
        outbox.push("a".into()).expect("fits");
        outbox.close(4001, "first");
        outbox.close(1000, "second");
        outbox.push("late".into()).expect("ignored while closing");
        outbox.ping();
        assert_eq!(outbox.next().await, Next::Text("a".into()));
        assert_eq!(outbox.next().await, Next::Close(4001, "first"));
        outbox.closed().await;
    }

    #[tokio::test]
    async fn after_an_overflow_only_the_close_is_left() {
        let outbox = Outbox::new(bounds(4, 10));
        outbox.push("abc".into()).expect("fits");
        assert!(outbox.push("de".into()).is_err());
        outbox.close(4001, "slow");
        assert_eq!(outbox.next().await, Next::Close(4001, "slow"));
    }
}
