//! The wire format of rtcmesh's own reliability, on the hidden channel between two rtcmesh
//! peers. One SCTP message carries one or more frames; a DATA frame, when present, is the last
//! one (its payload runs to the end of the message). Every integer is a QUIC variable-length
//! integer (RFC 9000 §16: 1, 2, 4 or 8 bytes, values below 2^62).
//!
//! ```text
//! ACK   0x02  largest  ack_delay_us  range_count  first_range  (gap  range_length){range_count}
//! DATA  0x10 | FIN | ACK_NOW  transmission  floor_gap  channel  sequence  payload…
//! ```
//!
//! - ACK is QUIC's ACK frame (RFC 9000 §19.3) over *transmission numbers*: `largest` is the
//!   largest acknowledged, `first_range` the count of consecutive ones below it, then each `gap`
//!   skips `gap + 1` unacknowledged numbers and `range_length + 1` more are acknowledged.
//!   At most [`MAX_ACK_RANGES`] ranges: more is malformed.
//! - DATA carries one fragment of a message: `transmission` is the sender's number for this
//!   transmission (a retransmission gets a new one), `floor_gap` is `transmission` minus the
//!   sender's floor (every transmission below the floor is acknowledged or given up, so the
//!   receiver forgets them), `channel` the layout index of a reliable channel, `sequence` the
//!   fragment's number on that channel (consecutive), `FIN` (0x01) marks a message's last
//!   fragment, `ACK_NOW` (0x02) asks for an acknowledgement without the usual wait (the sender
//!   has filled its congestion window and waits for one, or has nothing else in flight).

use std::ops::Range;

use smallvec::SmallVec;

/// The most ACK ranges a frame may carry (and a receiver remembers).
pub(crate) const MAX_ACK_RANGES: usize = 32;

/// The longest DATA header: type, four 8-byte integers... except `channel`, which stays below
/// 2^14 (2 bytes).
pub(crate) const MAX_DATA_HEADER: usize = 1 + 8 + 8 + 2 + 8;

const ACK: u8 = 0x02;
const DATA: u8 = 0x10;
const FIN: u8 = 0x01;
const ACK_NOW: u8 = 0x02;
const DATA_FLAGS: u8 = FIN | ACK_NOW;

/// The largest value a varint holds.
pub(crate) const MAX_VARINT: u64 = (1 << 62) - 1;

/// Why a message from the peer was not understood (it is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Ended inside a frame.
    Truncated,
    /// A frame type this version does not know.
    UnknownFrame,
    /// An ACK with more than [`MAX_ACK_RANGES`] ranges, or ranges below zero.
    BadAck,
    /// A DATA frame whose floor is above its own transmission number.
    BadData,
    /// Nothing in it.
    Empty,
}

/// An acknowledgement of transmission numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ack {
    /// The acknowledged numbers, as inclusive ranges from the highest down.
    pub ranges: SmallVec<[(u64, u64); 8]>,
    /// How long the receiver held the acknowledgement of the largest one, in microseconds.
    pub delay_us: u64,
}

impl Ack {
    pub fn largest(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.1)
    }
}

/// One fragment of a message (its payload is `payload`, a range of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Data {
    pub transmission: u64,
    pub floor: u64,
    pub channel: u16,
    pub sequence: u64,
    pub fin: bool,
    /// The sender asks for an acknowledgement at once.
    pub ack_now: bool,
    pub payload: Range<usize>,
}

/// What one SCTP message of the hidden channel says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Message {
    pub ack: Option<Ack>,
    pub data: Option<Data>,
}

/// Decodes one message. Bounded: at most one ACK (its ranges capped) and one DATA frame are
/// read; anything else is malformed.
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { bytes, at: 0 };
    let mut message = Message::default();
    if bytes.is_empty() {
        return Err(Malformed::Empty);
    }
    while r.at < bytes.len() {
        let kind = r.byte()?;
        match kind {
            ACK if message.ack.is_none() => message.ack = Some(decode_ack(&mut r)?),
            k if k & !DATA_FLAGS == DATA => {
                let transmission = r.varint()?;
                let floor_gap = r.varint()?;
                let channel = r.varint()?;
                let sequence = r.varint()?;
                let floor = transmission
                    .checked_sub(floor_gap)
                    .ok_or(Malformed::BadData)?;
                let channel = u16::try_from(channel).map_err(|_| Malformed::BadData)?;
                message.data = Some(Data {
                    transmission,
                    floor,
                    channel,
                    sequence,
                    fin: k & FIN != 0,
                    ack_now: k & ACK_NOW != 0,
                    payload: r.at..bytes.len(),
                });
                return Ok(message);
            }
            _ => return Err(Malformed::UnknownFrame),
        }
    }
    Ok(message)
}

fn decode_ack(r: &mut Reader<'_>) -> Result<Ack, Malformed> {
    let largest = r.varint()?;
    let delay_us = r.varint()?;
    let count = r.varint()?;
    if count >= MAX_ACK_RANGES as u64 {
        return Err(Malformed::BadAck);
    }
    let first = r.varint()?;
    let mut high = largest;
    let mut low = high.checked_sub(first).ok_or(Malformed::BadAck)?;
    let mut ranges = SmallVec::new();
    ranges.push((low, high));
    for _ in 0..count {
        let gap = r.varint()?;
        let len = r.varint()?;
        // The next range ends `gap + 1` numbers below this one's low end.
        high = low
            .checked_sub(gap)
            .and_then(|h| h.checked_sub(2))
            .ok_or(Malformed::BadAck)?;
        low = high.checked_sub(len).ok_or(Malformed::BadAck)?;
        ranges.push((low, high));
    }
    Ok(Ack { ranges, delay_us })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self.bytes.get(self.at).ok_or(Malformed::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let first = self.byte()?;
        let len = 1usize << (first >> 6);
        let mut value = u64::from(first & 0x3f);
        for _ in 1..len {
            value = (value << 8) | u64::from(self.byte()?);
        }
        Ok(value)
    }
}

/// The bytes `v` takes as a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    match v {
        0..0x40 => 1,
        0x40..0x4000 => 2,
        0x4000..0x4000_0000 => 4,
        _ => 8,
    }
}

/// Appends `v` (at most [`MAX_VARINT`]) as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    debug_assert!(v <= MAX_VARINT);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v.min(MAX_VARINT) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Appends an ACK frame for `ranges` (inclusive, highest first, disjoint and not adjacent).
pub(crate) fn put_ack(out: &mut Vec<u8>, ranges: &[(u64, u64)], delay_us: u64) {
    let Some(&(low, high)) = ranges.first() else {
        return;
    };
    let ranges = &ranges[..ranges.len().min(MAX_ACK_RANGES)];
    out.push(ACK);
    put_varint(out, high);
    put_varint(out, delay_us.min(MAX_VARINT));
    put_varint(out, ranges.len() as u64 - 1);
    put_varint(out, high - low);
    let mut prev_low = low;
    for &(low, high) in &ranges[1..] {
        put_varint(out, prev_low - high - 2);
        put_varint(out, high - low);
        prev_low = low;
    }
}

/// Appends a DATA frame's header (the payload follows).
pub(crate) fn put_data_header(
    out: &mut Vec<u8>,
    transmission: u64,
    floor: u64,
    channel: u16,
    sequence: u64,
    fin: bool,
    ack_now: bool,
) {
    out.push(DATA | if fin { FIN } else { 0 } | if ack_now { ACK_NOW } else { 0 });
    put_varint(out, transmission);
    put_varint(out, transmission - floor);
    put_varint(out, u64::from(channel));
    put_varint(out, sequence);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_one_to_eight_bytes_and_read_back() {
        for (v, len) in [
            (0, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (MAX_VARINT, 8),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
            let mut r = Reader { bytes: &out, at: 0 };
            assert_eq!(r.varint(), Ok(v));
        }
    }

    #[test]
    fn an_ack_and_a_data_frame_travel_in_one_message() {
        let mut out = Vec::new();
        let ranges = [(90, 100), (50, 80), (7, 7)];
        put_ack(&mut out, &ranges, 1234);
        let ack_len = out.len();
        put_data_header(&mut out, 1_000_000, 999_990, 4, 77, true, false);
        let start = out.len();
        out.extend_from_slice(b"payload");
        let m = decode(&out).expect("decodes");
        let ack = m.ack.expect("ack");
        assert_eq!(ack.ranges.as_slice(), &ranges);
        assert_eq!(ack.delay_us, 1234);
        assert_eq!(
            m.data,
            Some(Data {
                transmission: 1_000_000,
                floor: 999_990,
                channel: 4,
                sequence: 77,
                fin: true,
                ack_now: false,
                payload: start..out.len(),
            })
        );
        assert!(start - ack_len <= MAX_DATA_HEADER);
        let mut largest = Vec::new();
        put_data_header(&mut largest, MAX_VARINT, 0, 16_383, MAX_VARINT, false, true);
        assert_eq!(largest.len(), MAX_DATA_HEADER);
        assert_eq!(
            decode(&largest).expect("decodes").data.map(|d| d.ack_now),
            Some(true)
        );
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn malformed_messages_are_refused_not_misread() {
        assert_eq!(decode(&[]), Err(Malformed::Empty));
        assert_eq!(decode(&[0x7f]), Err(Malformed::UnknownFrame));
        assert_eq!(decode(&[DATA, 5]), Err(Malformed::Truncated));
        // Floor above the transmission number.
        assert_eq!(decode(&[DATA, 5, 6, 0, 0]), Err(Malformed::BadData));
        // An ACK whose first range goes below zero.
        assert_eq!(decode(&[ACK, 3, 0, 0, 4]), Err(Malformed::BadAck));
        // Too many ranges.
        assert_eq!(decode(&[ACK, 3, 0, 40, 0]), Err(Malformed::BadAck));
        // Two ACK frames.
        let mut two = Vec::new();
        put_ack(&mut two, &[(1, 1)], 0);
        put_ack(&mut two, &[(1, 1)], 0);
        assert_eq!(decode(&two), Err(Malformed::UnknownFrame));
        // A channel number beyond u16.
        let mut big = vec![DATA];
        for v in [10, 0, 70_000, 0] {
            put_varint(&mut big, v);
        }
        assert_eq!(decode(&big), Err(Malformed::BadData));
    }
}
