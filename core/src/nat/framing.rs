//! TURN over a byte stream (RFC 8656 §12.5, as RFC 6062 and browsers use it for
//! `?transport=tcp` and `turns:`): STUN messages delimited by their length field, ChannelData
//! by its own and padded to a multiple of four bytes. This cuts a server's stream into frames
//! and pads ours; what a server sends is untrusted, so memory stays bounded whatever arrives:
//!
//! - bytes that are neither STUN nor ChannelData end the stream (nothing after them can be
//!   framed);
//! - a frame larger than [`MAX_FRAME`] is skipped as it streams by, never held (a peer's
//!   oversize datagram, relayed to us, must not cost every peer the relay);
//! - a frame still unfinished [`FRAME_STALL`] after its first byte ends the stream.
//!
//! `turn-client-proto` 0.7 frames TCP too (`TurnTcpBuffer`), but neither pads ChannelData nor
//! expects the padding, and holds whatever arrives unframeable without bound; so frames are cut
//! here and its TCP client is handed exactly one at a time.

use std::ops::Range;
use std::time::{Duration, Instant};

use turn_client_proto::stun::types::message::MessageHeader;

/// The largest frame held: a relayed datagram of the largest MTU (1500) in a Data indication
/// is about 1,600 bytes, the server's own messages far less.
pub(crate) const MAX_FRAME: usize = 4096;
/// How long a frame may take from its first byte to its last. TCP's retransmissions need
/// seconds on a bad path; a server that never finishes a frame is stuck or hostile.
pub(crate) const FRAME_STALL: Duration = Duration::from_secs(15);

const STUN_HEADER: usize = 20;
const CHANNEL_HEADER: usize = 4;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A STUN message (the server's answers, Data indications).
    Stun,
    /// ChannelData (relayed data from a peer), without its padding.
    Channel,
}

/// The stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Bytes that start no frame.
    Garbage,
    /// A frame unfinished for [`FRAME_STALL`].
    Stalled,
}

/// The receiving side of one stream.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`.
    position: usize,
    /// Bytes of an oversize frame still to be skipped as they arrive.
    skip: usize,
    /// When the frame now incomplete began to arrive.
    started: Option<Instant>,
    /// Frames skipped for being larger than [`MAX_FRAME`].
    pub oversize: u64,
}

impl Framer {
    /// Takes bytes from the stream; then call [`next`](Framer::next) until it gives `None`.
    pub fn push(&mut self, now: Instant, mut bytes: &[u8]) {
        if self.skip > 0 {
            let skipped = self.skip.min(bytes.len());
            self.skip -= skipped;
            bytes = &bytes[skipped..];
            if self.skip == 0 {
                self.started = None;
            }
        }
        if self.position > 0 {
            self.buffer.drain(..self.position);
            self.position = 0;
        }
        self.buffer.extend_from_slice(bytes);
        if self.started.is_none() && (self.skip > 0 || !self.buffer.is_empty()) {
            self.started = Some(now);
        }
    }

    /// The next complete frame: its kind and where it is (see [`frame`](Framer::frame)).
    pub fn next(&mut self, now: Instant) -> Result<Option<(FrameKind, Range<usize>)>, FrameError> {
        loop {
            let available = &self.buffer[self.position..];
            if available.is_empty() && self.skip == 0 {
                self.started = None;
                self.compact();
                return Ok(None);
            }
            let Some((kind, length, total)) = header(available)? else {
                return self.incomplete(now);
            };
            if total > MAX_FRAME {
                self.oversize += 1;
                let here = available.len().min(total);
                self.position += here;
                self.skip = total - here;
                self.started = (self.skip > 0).then_some(now);
                continue;
            }
            if available.len() < total {
                return self.incomplete(now);
            }
            let start = self.position;
            self.position += total;
            // The next frame starts now.
            self.started = (self.position < self.buffer.len()).then_some(now);
            return Ok(Some((kind, start..start + length)));
        }
    }

    /// The bytes of a frame [`next`](Framer::next) returned (until the next `push`).
    pub fn frame(&self, range: Range<usize>) -> &[u8] {
        &self.buffer[range]
    }

    /// When the incomplete frame will have stalled, if one is incomplete.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|at| at + FRAME_STALL)
    }

    /// Bytes held (bounded by [`MAX_FRAME`] plus the last chunk pushed).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buffer.len() - self.position
    }

    fn incomplete(
        &mut self,
        now: Instant,
    ) -> Result<Option<(FrameKind, Range<usize>)>, FrameError> {
        if self.started.is_some_and(|at| now >= at + FRAME_STALL) {
            return Err(FrameError::Stalled);
        }
        self.compact();
        Ok(None)
    }

    /// Moves what is left of the buffer to its front, and lets a large one go.
    fn compact(&mut self) {
        if self.position > 0 {
            self.buffer.drain(..self.position);
            self.position = 0;
        }
        if self.buffer.capacity() > 4 * MAX_FRAME && self.buffer.len() <= MAX_FRAME {
            self.buffer.shrink_to(MAX_FRAME);
        }
    }
}

/// A frame's kind, its length without padding, and its length on the stream; `None` while too
/// few bytes are there to tell.
fn header(bytes: &[u8]) -> Result<Option<(FrameKind, usize, usize)>, FrameError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0b00 => {
            // A STUN message: the magic cookie at 4..8, a length that is a multiple of four.
            let cookie = &bytes[bytes.len().min(4)..bytes.len().min(8)];
            if cookie != &MAGIC_COOKIE[..cookie.len()] {
                return Err(FrameError::Garbage);
            }
            if bytes.len() < STUN_HEADER {
                return Ok(None);
            }
            let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            if length % 4 != 0 || MessageHeader::from_bytes(&bytes[..STUN_HEADER]).is_err() {
                return Err(FrameError::Garbage);
            }
            let total = STUN_HEADER + length;
            Ok(Some((FrameKind::Stun, total, total)))
        }
        0b01 => {
            // ChannelData: channel numbers 0x4000-0x7FFF (0x5000 and up are reserved, and
            // dropped as unknown channels), padded to four bytes on a stream.
            if bytes.len() < CHANNEL_HEADER {
                return Ok(None);
            }
            let length = CHANNEL_HEADER + usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            Ok(Some((FrameKind::Channel, length, padded(length))))
        }
        _ => Err(FrameError::Garbage),
    }
}

/// `length` rounded up to a multiple of four.
pub(crate) fn padded(length: usize) -> usize {
    length.div_ceil(4) * 4
}

/// A frame for the stream: ChannelData padded to four bytes (STUN messages always are).
pub(crate) fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(padded(frame.len()), 0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(body: usize) -> Vec<u8> {
        let mut m = vec![0x01, 0x01];
        m.extend_from_slice(&u16::try_from(body).expect("small").to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend(std::iter::repeat_n(0xAB, body));
        m
    }

    fn channel(data: usize) -> Vec<u8> {
        let mut c = vec![0x40, 0x00];
        c.extend_from_slice(&u16::try_from(data).expect("small").to_be_bytes());
        c.extend(std::iter::repeat_n(0xCD, data));
        pad(c)
    }

    /// Every frame the framer gives for these chunks.
    fn frames(framer: &mut Framer, now: Instant, chunks: &[&[u8]]) -> Vec<(FrameKind, Vec<u8>)> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(now, chunk);
            while let Some((kind, range)) = framer.next(now).expect("framed") {
                out.push((kind, framer.frame(range).to_vec()));
            }
        }
        out
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let now = Instant::now();
        let stream: Vec<u8> = [stun(8), channel(5), channel(8), stun(0)].concat();
        for cut in 1..stream.len() {
            let mut framer = Framer::default();
            let got = frames(&mut framer, now, &[&stream[..cut], &stream[cut..]]);
            let kinds: Vec<_> = got.iter().map(|(k, f)| (*k, f.len())).collect();
            assert_eq!(
                kinds,
                [
                    (FrameKind::Stun, 28),
                    (FrameKind::Channel, 9), // the padding is not part of the frame
                    (FrameKind::Channel, 12),
                    (FrameKind::Stun, 20),
                ],
                "cut at {cut}"
            );
            assert_eq!(framer.held(), 0);
            assert_eq!(framer.deadline(), None);
        }
        // Byte by byte too.
        let mut framer = Framer::default();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&mut framer, now, &bytes).len(), 4);
    }

    #[test]
    fn our_channel_data_is_padded_to_four_bytes() {
        assert_eq!(pad(vec![0x40, 0, 0, 1, 9]).len(), 8);
        assert_eq!(pad(vec![0x40, 0, 0, 4, 1, 2, 3, 4]).len(), 8);
        assert_eq!(padded(0), 0);
    }

    #[test]
    fn garbage_ends_the_stream() {
        let now = Instant::now();
        for garbage in [
            &[0xFF, 1, 2, 3][..],            // neither STUN nor ChannelData
            &[0x80, 0, 0, 0],                // RTP/DTLS-looking
            &[0x00, 0x01, 0, 0, 1, 2, 3, 4], // STUN without the magic cookie
            &stun(3)[..23],                  // a STUN length not a multiple of four
        ] {
            let mut framer = Framer::default();
            framer.push(now, garbage);
            assert_eq!(framer.next(now), Err(FrameError::Garbage), "{garbage:?}");
        }
        // A good frame first still comes out before the garbage is seen.
        let mut framer = Framer::default();
        framer.push(now, &[stun(4), vec![0xFF; 8]].concat());
        assert!(matches!(framer.next(now), Ok(Some((FrameKind::Stun, _)))));
        assert_eq!(framer.next(now), Err(FrameError::Garbage));
    }

    #[test]
    fn an_oversize_frame_is_skipped_without_being_held() {
        let now = Instant::now();
        let big = channel(60_000);
        let stream = [big.clone(), channel(3), stun(4)].concat();
        let mut framer = Framer::default();
        let mut got = Vec::new();
        let mut most_held = 0;
        for chunk in stream.chunks(1000) {
            framer.push(now, chunk);
            most_held = most_held.max(framer.held());
            while let Some((kind, _)) = framer.next(now).expect("framed") {
                got.push(kind);
            }
        }
        assert_eq!(got, [FrameKind::Channel, FrameKind::Stun]);
        assert_eq!(framer.oversize, 1);
        assert!(most_held <= 1000, "held {most_held} bytes");
    }

    #[test]
    fn a_frame_that_never_ends_stalls_the_stream() {
        let start = Instant::now();
        let mut framer = Framer::default();
        // A header promising 4000 bytes, then a trickle.
        framer.push(start, &channel(4000)[..10]);
        assert_eq!(framer.next(start), Ok(None));
        assert_eq!(framer.deadline(), Some(start + FRAME_STALL));
        let mut now = start;
        while now < start + FRAME_STALL - Duration::from_secs(1) {
            now += Duration::from_secs(1);
            framer.push(now, &[0xCD]);
            assert_eq!(framer.next(now), Ok(None));
        }
        now = start + FRAME_STALL;
        framer.push(now, &[0xCD]);
        assert_eq!(framer.next(now), Err(FrameError::Stalled));
        // An oversize frame skipped too slowly stalls the same way.
        let mut framer = Framer::default();
        framer.push(start, &channel(60_000)[..100]);
        assert_eq!(framer.next(start), Ok(None));
        assert_eq!(framer.deadline(), Some(start + FRAME_STALL));
        assert_eq!(framer.next(start + FRAME_STALL), Err(FrameError::Stalled));
    }

    #[test]
    fn the_stall_clock_restarts_with_each_frame() {
        let start = Instant::now();
        let mut framer = Framer::default();
        let a = channel(100);
        let b = channel(100);
        framer.push(start, &[&a[..], &b[..50]].concat());
        assert!(matches!(framer.next(start), Ok(Some(_))));
        assert_eq!(framer.next(start), Ok(None));
        let later = start + FRAME_STALL - Duration::from_millis(1);
        framer.push(later, &b[50..60]);
        assert_eq!(framer.next(later), Ok(None), "b began at `start`");
        assert_eq!(framer.deadline(), Some(start + FRAME_STALL));
        framer.push(later, &b[60..]);
        assert!(matches!(framer.next(later), Ok(Some(_))));
        assert_eq!(framer.deadline(), None);
    }
}
