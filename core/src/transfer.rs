//! The MultiplayerPeer vocabulary: peer ids, transfer modes, targets and connection status.

use std::fmt;

/// A peer's unique id, as in Godot: `1` is the server, valid ids are `1..=2147483647`.
pub type PeerId = i32;

/// The server's peer id (Godot's `TARGET_PEER_SERVER`).
pub const SERVER_ID: PeerId = 1;

/// Returns whether `id` is a valid unique peer id (`1..=2147483647`).
pub fn is_valid_peer_id(id: PeerId) -> bool {
    id >= 1
}

/// How a packet is delivered (Godot's `MultiplayerPeer.TransferMode`, same numbers).
///
/// ```
/// use rtcmesh::TransferMode;
///
/// // Godot's integers, as a GDScript peer sends them in its own protocol.
/// assert_eq!(TransferMode::try_from(2), Ok(TransferMode::Reliable));
/// assert_eq!(TransferMode::Reliable as i64, 2);
/// assert!(TransferMode::try_from(3).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransferMode {
    /// Unordered, not retransmitted after the channel's packet lifetime.
    Unreliable = 0,
    /// Ordered; late packets are dropped rather than delivered out of order.
    UnreliableOrdered = 1,
    /// Ordered and retransmitted until acknowledged.
    Reliable = 2,
}

impl TransferMode {
    /// All modes, in Godot's numeric order.
    pub const ALL: [TransferMode; 3] = [
        TransferMode::Unreliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Reliable,
    ];
}

/// A Godot transfer-mode integer that is not 0, 1 or 2.
///
/// ```
/// use rtcmesh::{InvalidTransferMode, TransferMode};
///
/// let error = TransferMode::try_from(7).unwrap_err();
/// assert_eq!(error, InvalidTransferMode(7));
/// assert!(error.to_string().contains("0 unreliable, 1 unreliable ordered, 2 reliable"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTransferMode(pub i64);

impl fmt::Display for InvalidTransferMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a transfer mode (0 unreliable, 1 unreliable ordered, 2 reliable)",
            self.0
        )
    }
}

impl std::error::Error for InvalidTransferMode {}

impl TryFrom<i64> for TransferMode {
    type Error = InvalidTransferMode;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(TransferMode::Unreliable),
            1 => Ok(TransferMode::UnreliableOrdered),
            2 => Ok(TransferMode::Reliable),
            other => Err(InvalidTransferMode(other)),
        }
    }
}

/// Who a packet is for (Godot's target peer: `0`, `n`, `-n`).
///
/// ```
/// use rtcmesh::Target;
///
/// assert_eq!(Target::from(0), Target::All);
/// assert_eq!(Target::from(5), Target::Peer(5));
/// assert_eq!(Target::from(-5), Target::AllExcept(5)); // Godot's `-n`
/// assert_eq!(Target::AllExcept(5).to_godot(), -5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every connected peer (Godot `0`).
    All,
    /// One peer (Godot `n > 0`; `1` is the server).
    Peer(PeerId),
    /// Every connected peer except this one (Godot `-n`).
    AllExcept(PeerId),
}

impl From<i32> for Target {
    /// Godot's integer encoding: `0` broadcast, `n > 0` that peer, `-n` everyone but `n`.
    /// `i32::MIN` has no positive counterpart; sending to it fails with
    /// [`SendError::InvalidTarget`](crate::SendError::InvalidTarget).
    fn from(value: i32) -> Self {
        match value {
            0 => Target::All,
            n if n > 0 => Target::Peer(n),
            n => Target::AllExcept(n.wrapping_neg()),
        }
    }
}

impl Target {
    /// The Godot integer for this target (`0`, `n` or `-n`).
    pub fn to_godot(self) -> i32 {
        match self {
            Target::All => 0,
            Target::Peer(n) => n,
            Target::AllExcept(n) => n.wrapping_neg(),
        }
    }
}

/// The local connection status (Godot's `MultiplayerPeer.ConnectionStatus`, same numbers).
///
/// ```
/// use rtcmesh::{ConnectionStatus, Mesh, MeshConfig};
///
/// let client = Mesh::create_client(7, MeshConfig::default())?;
/// assert_eq!(client.status(), ConnectionStatus::Connecting); // until the server's channels open
/// let server = Mesh::create_server(MeshConfig::default())?;
/// assert_eq!(server.status(), ConnectionStatus::Connected);
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    /// Closed, or (client mode) the server was lost or never reached.
    Disconnected = 0,
    /// Client mode only: waiting for the server's channels to open.
    Connecting = 1,
    /// Server and mesh modes from the start; client mode once the server is connected.
    Connected = 2,
}

/// Which of Godot's three topologies a mesh runs.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, Mode};
///
/// let mesh = Mesh::create_mesh(3, MeshConfig::default())?;
/// assert_eq!(mesh.mode(), Mode::Mesh);
/// assert_eq!(Mesh::create_server(MeshConfig::default())?.mode(), Mode::Server);
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `create_server()`: unique id 1, any client may be added.
    Server,
    /// `create_client(id)`: only the server (peer 1) may be added.
    Client,
    /// `create_mesh(id)`: any other peer may be added.
    Mesh,
}
