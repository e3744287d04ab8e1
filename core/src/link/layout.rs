//! The channel layout both rtcmesh ends state in their SDP, so peers configured with different
//! `MeshConfig::channels` end the connection with a reason instead of losing every packet sent
//! on a channel the other side does not have.
//!
//! The offering rtcmesh adds the session-level attribute `a=x-rtcmesh-channels:<n> <modes>`
//! (`n` extra channels, one letter per channel: `R` reliable, `O` unreliable ordered, `U`
//! unreliable) to its offers; an answering rtcmesh states its own layout in the answer only if
//! the offer had the attribute, so a browser or Godot peer never sees it (RFC 8866 §5.13: a
//! receiver ignores attributes it does not know, and it has none to echo). Each side compares
//! what the other stated with its own layout once the SDP is applied. A Godot or browser peer
//! states nothing, so a mismatch with one cannot be seen: its packets on a channel we do not
//! have are counted in `MeshStats::packets_unknown_channel`, ours on a channel it does not
//! have are dropped by its stack (see docs/sending.md).

use super::session_attribute;
use crate::channels::{ChannelSpec, MAX_EXTRA_CHANNELS};
use crate::transfer::TransferMode;

const NAME: &str = "a=x-rtcmesh-channels:";

/// What a remote SDP says of its channel layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stated {
    /// Nothing: a peer that is not rtcmesh (or an older one).
    Nothing,
    /// Its extra channels' modes, in order.
    Extra(Vec<TransferMode>),
    /// An attribute we cannot read.
    Unreadable,
}

/// A mismatch: our extra channel count and the peer's (`None`: unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mismatch {
    pub local: u16,
    pub remote: Option<u16>,
}

/// The extra channels of a layout (after Godot's three defaults).
fn extra(layout: &[ChannelSpec]) -> impl Iterator<Item = TransferMode> + '_ {
    layout
        .iter()
        .filter(|s| s.transfer_channel > 0)
        .map(|s| s.mode)
}

fn letter(mode: TransferMode) -> char {
    match mode {
        TransferMode::Reliable => 'R',
        TransferMode::UnreliableOrdered => 'O',
        TransferMode::Unreliable => 'U',
    }
}

/// `sdp` with our layout stated at session level (before the first media section).
pub(super) fn state(layout: &[ChannelSpec], sdp: String) -> String {
    let modes: String = extra(layout).map(letter).collect();
    let line = if modes.is_empty() {
        format!("{NAME}0")
    } else {
        format!("{NAME}{} {modes}", modes.len())
    };
    session_attribute::add(sdp, &line)
}

/// What `sdp` states of the remote's layout (session level only; bounded by
/// `MAX_EXTRA_CHANNELS`).
pub(super) fn stated(sdp: &str) -> Stated {
    let Some(value) = session_attribute::find(sdp, NAME) else {
        return Stated::Nothing;
    };
    let mut parts = value.split(' ');
    let count = match parts.next().map(str::parse::<usize>) {
        Some(Ok(n)) if n <= MAX_EXTRA_CHANNELS => n,
        _ => return Stated::Unreadable,
    };
    let modes = parts.next().unwrap_or("");
    if modes.len() != count {
        return Stated::Unreadable;
    }
    let modes: Option<Vec<TransferMode>> = modes
        .chars()
        .map(|c| match c {
            'R' => Some(TransferMode::Reliable),
            'O' => Some(TransferMode::UnreliableOrdered),
            'U' => Some(TransferMode::Unreliable),
            _ => None,
        })
        .collect();
    modes.map_or(Stated::Unreadable, Stated::Extra)
}

/// Compares what the remote stated with our layout (nothing stated: nothing to compare).
pub(super) fn check(layout: &[ChannelSpec], stated: &Stated) -> Result<(), Mismatch> {
    let local = extra(layout).count() as u16;
    match stated {
        Stated::Nothing => Ok(()),
        Stated::Extra(modes) if extra(layout).eq(modes.iter().copied()) => Ok(()),
        Stated::Extra(modes) => Err(Mismatch {
            local,
            remote: Some(modes.len() as u16),
        }),
        Stated::Unreadable => Err(Mismatch {
            local,
            remote: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n";

    #[test]
    fn a_stated_layout_is_read_back_and_sits_before_the_media_section() {
        let layout = channels::layout(&[TransferMode::Unreliable, TransferMode::Reliable]);
        let sdp = state(&layout, SDP.to_owned());
        assert!(sdp.contains("t=0 0\r\na=x-rtcmesh-channels:2 UR\r\nm=application"));
        assert_eq!(
            stated(&sdp),
            Stated::Extra(vec![TransferMode::Unreliable, TransferMode::Reliable])
        );
        assert_eq!(check(&layout, &stated(&sdp)), Ok(()));
        let none = channels::layout(&[]);
        assert_eq!(stated(&state(&none, SDP.to_owned())), Stated::Extra(vec![]));
    }

    #[test]
    fn a_different_layout_is_a_mismatch_and_an_sdp_without_one_is_not() {
        let ours = channels::layout(&[TransferMode::Reliable]);
        let theirs = channels::layout(&[TransferMode::Unreliable]);
        let sdp = state(&theirs, SDP.to_owned());
        assert_eq!(
            check(&ours, &stated(&sdp)),
            Err(Mismatch {
                local: 1,
                remote: Some(1)
            }),
            "same count, different mode"
        );
        let more = channels::layout(&[TransferMode::Reliable, TransferMode::Reliable]);
        assert_eq!(
            check(&ours, &stated(&state(&more, SDP.to_owned()))),
            Err(Mismatch {
                local: 1,
                remote: Some(2)
            })
        );
        assert_eq!(stated(SDP), Stated::Nothing, "a browser or Godot peer");
        assert_eq!(check(&ours, &Stated::Nothing), Ok(()));
    }

    #[test]
    fn hostile_attributes_are_unreadable_never_a_panic_or_a_large_allocation() {
        for bad in [
            "a=x-rtcmesh-channels:\r\n",
            "a=x-rtcmesh-channels:2 R\r\n",
            "a=x-rtcmesh-channels:1 X\r\n",
            "a=x-rtcmesh-channels:99999999999999999999 R\r\n",
            "a=x-rtcmesh-channels:1001 R\r\n",
            "a=x-rtcmesh-channels:-1\r\n",
            "a=x-rtcmesh-channels:1 É\r\n",
        ] {
            let sdp = SDP.replace("m=application", &format!("{bad}m=application"));
            assert_eq!(stated(&sdp), Stated::Unreadable, "{bad}");
        }
        let media_level = format!("{SDP}a=x-rtcmesh-channels:1 R\r\n");
        assert_eq!(stated(&media_level), Stated::Nothing, "session level only");
    }
}
