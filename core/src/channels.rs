//! Godot's data-channel layout → str0m channel configurations.
//!
//! | index | SCTP id | label | ordered | reliability | mode |
//! |---|---|---|---|---|---|
//! | 0 | 1 | `reliable` | yes | reliable | Reliable |
//! | 1 | 2 | `ordered` | yes | lifetime = `unreliable_lifetime` ms | UnreliableOrdered |
//! | 2 | 3 | `unreliable` | no | lifetime = `unreliable_lifetime` ms | Unreliable |
//! | 3+i | 4+i | `"4+i"` | per mode | per mode, lifetime 1 ms | extra channel i+1 |
//!
//! All channels are negotiated out of band (`negotiated: true` in the browser), so no DCEP
//! message is needed and a browser or Godot peer with the same layout interoperates.

use std::time::Duration;

use str0m::channel::{ChannelConfig, Reliability};

use crate::transfer::TransferMode;

/// How many default channels precede the extra ones (Godot's `CH_RESERVED_MAX`).
pub const RESERVED_CHANNELS: usize = 3;

/// The most extra channels a mesh accepts (SCTP stream ids stay well below 1024).
pub const MAX_EXTRA_CHANNELS: usize = 1000;

/// One data channel of a peer, in Godot's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelSpec {
    /// The transfer mode packets on this channel are reported with.
    pub mode: TransferMode,
    /// Godot's transfer channel number: 0 for the three defaults, `i + 1` for extra channel `i`.
    pub transfer_channel: u16,
    /// Out-of-band negotiated SCTP stream id.
    pub stream_id: u16,
}

/// The index of the channel a send uses: transfer channel 0 picks the mode's default channel,
/// `k >= 1` the k-th extra channel (whose own mode then applies, as in Godot).
pub(crate) fn channel_index(
    mode: TransferMode,
    transfer_channel: u16,
    extra: usize,
) -> Option<usize> {
    if transfer_channel == 0 {
        return Some(match mode {
            TransferMode::Reliable => 0,
            TransferMode::UnreliableOrdered => 1,
            TransferMode::Unreliable => 2,
        });
    }
    let k = usize::from(transfer_channel);
    (k <= extra).then_some(RESERVED_CHANNELS + k - 1)
}

/// The layout for a peer: three defaults, then one per configured extra mode.
pub(crate) fn layout(extra: &[TransferMode]) -> Vec<ChannelSpec> {
    let defaults = [
        TransferMode::Reliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Unreliable,
    ];
    let defaults = defaults.into_iter().map(|mode| (mode, 0));
    let extras = extra.iter().enumerate().map(|(i, &mode)| (mode, i + 1));
    defaults
        .chain(extras)
        .enumerate()
        .map(|(index, (mode, transfer_channel))| ChannelSpec {
            mode,
            // Both fit: the extra count is capped at MAX_EXTRA_CHANNELS when a mesh is created.
            transfer_channel: transfer_channel as u16,
            stream_id: index as u16 + 1,
        })
        .collect()
}

/// The str0m configuration of one channel, with Godot's label, order and lifetime.
pub(crate) fn str0m_config(spec: &ChannelSpec, unreliable_lifetime_ms: u16) -> ChannelConfig {
    let index = usize::from(spec.stream_id) - 1;
    let (label, lifetime) = match index {
        0 => ("reliable".to_owned(), unreliable_lifetime_ms),
        1 => ("ordered".to_owned(), unreliable_lifetime_ms),
        2 => ("unreliable".to_owned(), unreliable_lifetime_ms),
        _ => (spec.stream_id.to_string(), 1),
    };
    let (ordered, reliability) = match spec.mode {
        TransferMode::Reliable => (true, Reliability::Reliable),
        TransferMode::UnreliableOrdered => (true, Reliability::MaxPacketLifetime { lifetime }),
        TransferMode::Unreliable => (false, Reliability::MaxPacketLifetime { lifetime }),
    };
    ChannelConfig {
        label,
        ordered,
        reliability,
        negotiated: Some(spec.stream_id),
        protocol: String::new(),
    }
}

/// The packet lifetime of a partially reliable channel (`None` for a reliable one): what its
/// str0m configuration says, so rtcmesh's queue and SCTP agree.
pub(crate) fn lifetime(spec: &ChannelSpec, unreliable_lifetime_ms: u16) -> Option<Duration> {
    match str0m_config(spec, unreliable_lifetime_ms).reliability {
        Reliability::MaxPacketLifetime { lifetime } => {
            Some(Duration::from_millis(u64::from(lifetime)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_godot_table() {
        let specs = layout(&[TransferMode::Unreliable, TransferMode::Reliable]);
        let configs: Vec<_> = specs.iter().map(|s| str0m_config(s, 7)).collect();
        let summary: Vec<_> = configs
            .iter()
            .map(|c| (c.negotiated, c.label.as_str(), c.ordered, c.reliability))
            .collect();
        let life = |lifetime| Reliability::MaxPacketLifetime { lifetime };
        assert_eq!(
            summary,
            vec![
                (Some(1), "reliable", true, Reliability::Reliable),
                (Some(2), "ordered", true, life(7)),
                (Some(3), "unreliable", false, life(7)),
                (Some(4), "4", false, life(1)),
                (Some(5), "5", true, Reliability::Reliable),
            ]
        );
        let channels: Vec<_> = specs.iter().map(|s| (s.transfer_channel, s.mode)).collect();
        assert_eq!(channels[3], (1, TransferMode::Unreliable));
        assert_eq!(channels[4], (2, TransferMode::Reliable));
    }

    #[test]
    fn transfer_channel_zero_picks_the_mode_default() {
        assert_eq!(channel_index(TransferMode::Reliable, 0, 0), Some(0));
        assert_eq!(
            channel_index(TransferMode::UnreliableOrdered, 0, 0),
            Some(1)
        );
        assert_eq!(channel_index(TransferMode::Unreliable, 0, 0), Some(2));
        assert_eq!(channel_index(TransferMode::Reliable, 1, 0), None);
        assert_eq!(channel_index(TransferMode::Reliable, 2, 2), Some(4));
        assert_eq!(channel_index(TransferMode::Reliable, 3, 2), None);
    }
}
