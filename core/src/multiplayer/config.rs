//! Multiplayer layer configuration: SceneMultiplayer's `server_relay`, auth switch and timeout.

use std::time::Duration;

use crate::limits::MultiplayerLimits;

/// Settings of a [`Multiplayer`](crate::Multiplayer). The default matches Godot's
/// SceneMultiplayer: relay on, authentication off, 3 s authentication timeout.
///
/// ```
/// # use rtcmesh::*;
/// # use std::time::Duration;
/// let config = MultiplayerConfig::default()
///     .with_auth(true)
///     .with_auth_timeout(Some(Duration::from_secs(5)));
/// assert!(config.server_relay);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

crate::__config_setters!(MultiplayerConfig {
    with_server_relay => server_relay: bool,
    with_auth => auth: bool,
    with_auth_timeout => auth_timeout: Option<Duration>,
    with_limits => limits: MultiplayerLimits,
});
