//! Multiplayer layer configuration: SceneMultiplayer's `server_relay`, auth switch and timeout.

use std::time::Duration;

use crate::limits::MultiplayerLimits;

/// Settings of a [`Multiplayer`](crate::Multiplayer). The default matches Godot's
/// SceneMultiplayer: relay on, authentication off, 3 s authentication timeout.
///
/// ```
/// use std::time::Duration;
/// use rtcmesh::{Mesh, MeshConfig, Multiplayer, MultiplayerConfig};
///
/// let mut config = MultiplayerConfig::with_auth(); // Godot: an auth_callback is set
/// config.auth_timeout = Some(Duration::from_secs(5));
/// let server = Multiplayer::new(Mesh::create_server(MeshConfig::default())?, config);
/// assert!(server.is_server_relay_enabled()); // on by default, as in Godot
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiplayerConfig {
    /// Godot's `server_relay`: in server and client modes, clients reach each other through the
    /// server and the server announces peers to each other. Off, a client only talks to the
    /// server, and the server refuses RELAY packets.
    pub server_relay: bool,
    /// Whether peers must authenticate before they are admitted (Godot: an `auth_callback` is
    /// set). Both sides of a connection must agree.
    pub auth: bool,
    /// Godot's `auth_timeout`: a peer still authenticating this long after its connection opened
    /// is disconnected. `None` (Godot's `0`) or `Some(Duration::MAX)` waits forever. Measured
    /// with the `now` passed in.
    pub auth_timeout: Option<Duration>,
    /// Bounds on what peers can make the layer hold (auth data, relayed peers); see
    /// [`MultiplayerLimits`].
    pub limits: MultiplayerLimits,
}

impl Default for MultiplayerConfig {
    fn default() -> Self {
        MultiplayerConfig {
            server_relay: true,
            auth: false,
            auth_timeout: Some(Duration::from_secs(3)),
            limits: MultiplayerLimits::default(),
        }
    }
}

impl MultiplayerConfig {
    /// The default with authentication on.
    pub fn with_auth() -> Self {
        MultiplayerConfig {
            auth: true,
            ..MultiplayerConfig::default()
        }
    }

    /// The default with the server relay off.
    pub fn without_relay() -> Self {
        MultiplayerConfig {
            server_relay: false,
            ..MultiplayerConfig::default()
        }
    }
}
