//! Multiplayer layer configuration: SceneMultiplayer's `server_relay`, auth switch and timeout,
//! and host migration.

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
    /// Host migration: when the server leaves or crashes, another player becomes the server
    /// and the game goes on. Off by default (today's behaviour, byte for byte).
    pub migration: MigrationConfig,
}

impl Default for MultiplayerConfig {
    fn default() -> Self {
        MultiplayerConfig {
            server_relay: true,
            auth: false,
            auth_timeout: Some(Duration::from_secs(3)),
            limits: MultiplayerLimits::default(),
            migration: MigrationConfig::default(),
        }
    }
}

crate::__config_setters!(MultiplayerConfig {
    with_server_relay => server_relay: bool,
    with_auth => auth: bool,
    with_auth_timeout => auth_timeout: Option<Duration>,
    with_limits => limits: MultiplayerLimits,
    with_migration => migration: MigrationConfig,
});

/// Host migration settings (see docs/host-migration.md). Migration needs a lobby server that
/// supports it and peers that opted in; with `enabled` off (the default) the layer sends and
/// expects exactly what Godot's SceneMultiplayer does.
///
/// ```
/// # use rtcmesh::*;
/// # use std::time::Duration;
/// let config = MultiplayerConfig::default().with_migration(
///     MigrationConfig::enabled().with_host_timeout(Duration::from_secs(2)), // a WAN game
/// );
/// assert!(config.migration.enabled);
/// assert!(!MigrationConfig::default().enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationConfig {
    /// Take part in host migration. `false` (default): today's behaviour, byte for byte.
    pub enabled: bool,
    /// A client that heard nothing from the server this long reports it lost to the lobby,
    /// which decides whether it is gone (it may only be cut off from this client). Default
    /// 1 s, for a LAN; 2 s suits the internet.
    pub host_timeout: Duration,
    /// The server sends an opted-in client a keepalive when it sent it nothing else for this
    /// long, so that silence means trouble. Default 250 ms; keep it well under `host_timeout`.
    pub keepalive_interval: Duration,
    /// A client that lost its server and has no new one this long after gives up: it reports
    /// `MigrationFailed` and disconnects. Also bounds a graceful hand-over. Default 10 s.
    pub migration_timeout: Duration,
    /// The new server waits this long for the survivors to reconnect; those that did not are
    /// then removed (DEL_PEER to the others). Default 3 s.
    pub rejoin_window: Duration,
    /// Reliable packets sent while the server changes are held, up to this many bytes, and
    /// sent to the new server (beyond it, `send_bytes` returns `QueueFull`). On the new server
    /// the same bound holds what waits for survivors still reconnecting. Default 256 KiB.
    pub held_bytes: usize,
}

impl MigrationConfig {
    /// The default settings with migration on.
    pub fn enabled() -> MigrationConfig {
        MigrationConfig {
            enabled: true,
            ..MigrationConfig::default()
        }
    }
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            enabled: false,
            host_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_millis(250),
            migration_timeout: Duration::from_secs(10),
            rejoin_window: Duration::from_secs(3),
            held_bytes: 256 * 1024,
        }
    }
}

crate::__config_setters!(MigrationConfig {
    with_enabled => enabled: bool,
    with_host_timeout => host_timeout: Duration,
    with_keepalive_interval => keepalive_interval: Duration,
    with_migration_timeout => migration_timeout: Duration,
    with_rejoin_window => rejoin_window: Duration,
    with_held_bytes => held_bytes: usize,
});
