//! ICE server configuration in the shape Godot's `WebRTCPeerConnection.initialize` and the
//! W3C `RTCIceServer` take it, and the URL parsing behind it (RFC 7064 `stun:`, RFC 7065 `turn:`
//! and `turns:`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{CredentialsError, InvalidIceServer};

/// One entry of Godot's / the W3C's `iceServers`: one or more URLs of the same server, with the
/// long-term credential a TURN server needs.
///
/// ```
/// # use rtcmesh::IceServer;
/// let servers = vec![
///     IceServer::stun("stun:stun.example.org:3478"),
///     IceServer {
///         // One server, three ways in: UDP, TCP, and TLS on 443 for networks that allow
///         // nothing else. ICE prefers what works best.
///         urls: vec![
///             "turn:turn.example.org:3478".into(),
///             "turn:turn.example.org:3478?transport=tcp".into(),
///             "turns:turn.example.org:443".into(),
///         ],
///         username: "user".into(),
///         credential: "secret".into(),
///     },
/// ];
/// ```
///
/// `{:?}` shows the credential as `<redacted>`: a logged configuration does not leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    /// `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` or `turns:host[:port]`
    /// (TURN over TLS). The port defaults to 3478, 5349 for `turns:`. The host is an IP literal
    /// (`[::1]` for IPv6) or a name the adapter resolves (see
    /// [`Mesh::set_ice_server_addresses`](crate::Mesh::set_ice_server_addresses)); for
    /// `turns:` it is also the name the server's certificate must be valid for.
    pub urls: Vec<String>,
    /// The TURN username (ignored for `stun:`).
    pub username: String,
    /// The TURN password (W3C `credential`; ignored for `stun:`).
    pub credential: String,
}

impl IceServer {
    /// A STUN server: finds this mesh's public (server-reflexive) address.
    pub fn stun(url: impl Into<String>) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            ..IceServer::default()
        }
    }

    /// A TURN server with its long-term credential: relays for peers that cannot reach each
    /// other directly (symmetric NATs, strict firewalls). It answers STUN too.
    pub fn turn(
        url: impl Into<String>,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: username.into(),
            credential: credential.into(),
        }
    }
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &Redacted(&self.credential))
            .finish()
    }
}

/// A secret as `{:?}` shows it: `<redacted>`, or `""` when there is none (which is worth
/// seeing: a TURN entry without a credential is refused).
pub(crate) struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("\"\""),
            false => f.write_str("<redacted>"),
        }
    }
}

/// Which local candidates ICE may use (W3C `iceTransportPolicy`).
///
/// ```
/// use rtcmesh::{IceServer, IceTransportPolicy, Mesh, MeshConfig};
///
/// let mut config = MeshConfig::default();
/// config.ice_servers = vec![IceServer::turn("turn:turn.example.org", "user", "secret")];
/// config.ice_transport_policy = IceTransportPolicy::Relay; // never reveal the host or public address
/// let _mesh = Mesh::create_mesh(2, config)?;
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IceTransportPolicy {
    /// Every candidate: host, server-reflexive and relayed (default). ICE prefers direct
    /// paths and relays only pairs that cannot reach each other otherwise.
    #[default]
    All,
    /// Only relayed candidates: every peer is reached through the TURN server, and neither the
    /// host nor the public address is ever given to a peer. Needs a `turn:` server.
    Relay,
}

/// The most ICE server URLs a mesh takes (each costs a request every few seconds).
pub const MAX_ICE_SERVER_URLS: usize = 16;

/// STUN only, or TURN (which answers STUN too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Stun,
    Turn,
}

/// How TURN messages reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Datagrams on the mesh's socket.
    Udp,
    /// A TCP connection the adapter opens (`?transport=tcp`).
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

/// Where the server is: an address now, or a name the adapter must resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerHost {
    Ip(IpAddr),
    Name(String),
}

/// One parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    pub kind: ServerKind,
    pub transport: Transport,
    pub host: ServerHost,
    pub port: u16,
}

impl ServerUrl {
    /// The address, if the host is an IP literal.
    pub fn address(&self) -> Option<SocketAddr> {
        match &self.host {
            ServerHost::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            ServerHost::Name(_) => None,
        }
    }

    /// The name a `turns:` server's certificate must be valid for: the URL's host.
    pub fn tls_name(&self) -> Option<String> {
        (self.transport == Transport::Tls).then(|| match &self.host {
            ServerHost::Ip(ip) => ip.to_string(),
            ServerHost::Name(name) => name.clone(),
        })
    }
}

/// Parses one URL (`stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`,
/// `turns:host[:port][?transport=tcp]`).
pub(crate) fn parse(url: &str) -> Result<ServerUrl, InvalidIceServer> {
    let url = url.trim();
    let (scheme, rest) = url.split_once(':').ok_or(InvalidIceServer::UnknownScheme)?;
    let (kind, mut transport) = match scheme.to_ascii_lowercase().as_str() {
        "stun" => (ServerKind::Stun, Transport::Udp),
        "turn" => (ServerKind::Turn, Transport::Udp),
        "turns" => (ServerKind::Turn, Transport::Tls),
        // STUN over TLS finds the public address of a TCP connection, which no UDP candidate
        // can use (browsers ignore `stuns:` too).
        "stuns" => return Err(InvalidIceServer::TlsNotSupported),
        _ => return Err(InvalidIceServer::UnknownScheme),
    };
    if rest.starts_with("//") {
        // RFC 7064/7065 URIs have no authority part; browsers refuse `stun://` too.
        return Err(InvalidIceServer::BadHost);
    }
    let (hostport, query) = match rest.split_once('?') {
        Some((hp, q)) => (hp, Some(q)),
        None => (rest, None),
    };
    if let Some(query) = query {
        match (kind, transport, query.to_ascii_lowercase().as_str()) {
            (ServerKind::Turn, Transport::Udp, "transport=udp") => {}
            (ServerKind::Turn, Transport::Udp, "transport=tcp") => transport = Transport::Tcp,
            (ServerKind::Turn, Transport::Tls, "transport=tcp") => {}
            // TURN over DTLS: neither browsers nor coturn's usual setups offer it.
            (ServerKind::Turn, Transport::Tls, "transport=udp") => {
                return Err(InvalidIceServer::TlsNotSupported)
            }
            _ => return Err(InvalidIceServer::BadQuery),
        }
    }
    let default_port = match transport {
        Transport::Tls => 5349,
        Transport::Udp | Transport::Tcp => 3478,
    };
    let (host, port) = split_host_port(hostport, default_port)?;
    Ok(ServerUrl {
        kind,
        transport,
        host,
        port,
    })
}

fn split_host_port(
    hostport: &str,
    default_port: u16,
) -> Result<(ServerHost, u16), InvalidIceServer> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or(InvalidIceServer::BadHost)?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| InvalidIceServer::BadHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(InvalidIceServer::BadPort)?),
        };
        (ServerHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            ServerHost::Ip(IpAddr::V4(ip))
        } else if is_host_name(host) {
            ServerHost::Name(host.to_ascii_lowercase())
        } else {
            return Err(InvalidIceServer::BadHost);
        };
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(InvalidIceServer::BadPort),
        },
    };
    Ok((host, port))
}

/// RFC 1123 host name: dot-separated labels of letters, digits and hyphens.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // An all-numeric name is a mistyped IPv4 address, not a host.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The URLs of an entry that brings new credentials for running servers
/// ([`Mesh::set_ice_server_credentials`](crate::Mesh::set_ice_server_credentials)): each must
/// be a `turn:`/`turns:` URL, and the entry must carry a username and a credential.
pub(crate) fn parse_credentials(
    server: &IceServer,
) -> Result<Vec<(String, ServerUrl)>, CredentialsError> {
    if server.urls.is_empty() {
        return Err(CredentialsError::Invalid {
            url: String::new(),
            reason: InvalidIceServer::NoUrls,
        });
    }
    if server.urls.len() > MAX_ICE_SERVER_URLS {
        return Err(CredentialsError::Invalid {
            url: server.urls[MAX_ICE_SERVER_URLS].clone(),
            reason: InvalidIceServer::TooMany,
        });
    }
    let mut out = Vec::with_capacity(server.urls.len());
    for url in &server.urls {
        let parsed = parse(url).map_err(|reason| CredentialsError::Invalid {
            url: url.clone(),
            reason,
        })?;
        if parsed.kind == ServerKind::Stun {
            return Err(CredentialsError::NotTurn { url: url.clone() });
        }
        if server.username.is_empty() || server.credential.is_empty() {
            return Err(CredentialsError::Invalid {
                url: url.clone(),
                reason: InvalidIceServer::MissingCredentials,
            });
        }
        out.push((url.clone(), parsed));
    }
    Ok(out)
}

/// One configured URL with what it came with.
#[derive(Clone)]
pub(crate) struct ConfiguredServer {
    pub url: String,
    pub parsed: ServerUrl,
    pub username: String,
    pub credential: String,
}

impl fmt::Debug for ConfiguredServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredServer")
            .field("url", &self.url)
            .field("parsed", &self.parsed)
            .field("username", &self.username)
            .field("credential", &Redacted(&self.credential))
            .finish()
    }
}

/// Checks and flattens `iceServers`: one entry per URL, in order. The error carries the URL.
pub(crate) fn configure(
    servers: &[IceServer],
    policy: IceTransportPolicy,
) -> Result<Vec<ConfiguredServer>, (String, InvalidIceServer)> {
    let mut out = Vec::new();
    for server in servers {
        if server.urls.is_empty() {
            return Err((String::new(), InvalidIceServer::NoUrls));
        }
        for url in &server.urls {
            let parsed = parse(url).map_err(|e| (url.clone(), e))?;
            if parsed.kind == ServerKind::Turn
                && (server.username.is_empty() || server.credential.is_empty())
            {
                return Err((url.clone(), InvalidIceServer::MissingCredentials));
            }
            if out.len() == MAX_ICE_SERVER_URLS {
                return Err((url.clone(), InvalidIceServer::TooMany));
            }
            out.push(ConfiguredServer {
                url: url.clone(),
                parsed,
                username: server.username.clone(),
                credential: server.credential.clone(),
            });
        }
    }
    if policy == IceTransportPolicy::Relay && !out.iter().any(|s| s.parsed.kind == ServerKind::Turn)
    {
        return Err((String::new(), InvalidIceServer::RelayWithoutTurn));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> ServerUrl {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn urls_in_the_forms_browsers_take() {
        let u = ok("stun:203.0.113.1");
        assert_eq!(u.kind, ServerKind::Stun);
        assert_eq!(u.address(), Some("203.0.113.1:3478".parse().expect("addr")));
        let u = ok("turn:203.0.113.1:3479?transport=udp");
        assert_eq!(u.kind, ServerKind::Turn);
        assert_eq!((u.transport, u.port), (Transport::Udp, 3479));
        let u = ok("turn:203.0.113.1?transport=tcp");
        assert_eq!(
            (u.kind, u.transport, u.port),
            (ServerKind::Turn, Transport::Tcp, 3478)
        );
        assert_eq!(u.tls_name(), None);
        let u = ok("turns:Turn.Example.org");
        assert_eq!(
            (u.kind, u.transport, u.port),
            (ServerKind::Turn, Transport::Tls, 5349)
        );
        assert_eq!(u.tls_name().as_deref(), Some("turn.example.org"));
        let u = ok("turns:203.0.113.1:443?transport=tcp");
        assert_eq!((u.transport, u.port), (Transport::Tls, 443));
        assert_eq!(u.tls_name().as_deref(), Some("203.0.113.1"));
        let u = ok("TURN:[2001:db8::1]:5000");
        assert_eq!(
            u.address(),
            Some("[2001:db8::1]:5000".parse().expect("addr"))
        );
        assert_eq!(ok("stun:[::1]").port, 3478);
        let u = ok("stun:Stun.Example.org:19302");
        assert_eq!(u.host, ServerHost::Name("stun.example.org".into()));
        assert_eq!(u.address(), None);
    }

    #[test]
    fn malformed_urls_say_why() {
        let cases = [
            ("http://example.org", InvalidIceServer::UnknownScheme),
            ("example.org", InvalidIceServer::UnknownScheme),
            ("stuns:example.org", InvalidIceServer::TlsNotSupported),
            (
                "turns:example.org?transport=udp",
                InvalidIceServer::TlsNotSupported,
            ),
            ("stun:example.org?transport=tcp", InvalidIceServer::BadQuery),
            (
                "turn:example.org?transport=sctp",
                InvalidIceServer::BadQuery,
            ),
            ("stun:example.org?transport=udp", InvalidIceServer::BadQuery),
            ("stun://example.org", InvalidIceServer::BadHost),
            ("stun:", InvalidIceServer::BadHost),
            ("stun:exa mple.org", InvalidIceServer::BadHost),
            ("stun:1.2.3", InvalidIceServer::BadHost),
            ("stun:[::1", InvalidIceServer::BadHost),
            ("stun:[::1]x", InvalidIceServer::BadPort),
            ("stun:example.org:0", InvalidIceServer::BadPort),
            ("stun:example.org:70000", InvalidIceServer::BadPort),
            ("stun:example.org:+80", InvalidIceServer::BadPort),
            ("stun:example.org:", InvalidIceServer::BadPort),
        ];
        for (url, expected) in cases {
            assert_eq!(parse(url), Err(expected), "{url}");
        }
    }

    #[test]
    fn entries_need_credentials_and_a_relay_for_the_relay_policy() {
        let stun = IceServer::stun("stun:127.0.0.1");
        let all = IceTransportPolicy::All;
        assert_eq!(
            configure(std::slice::from_ref(&stun), all).map(|v| v.len()),
            Ok(1)
        );
        let no_cred = IceServer::turn("turn:127.0.0.1", "user", "");
        assert_eq!(
            configure(&[no_cred], all).map(|v| v.len()),
            Err((
                "turn:127.0.0.1".into(),
                InvalidIceServer::MissingCredentials
            ))
        );
        assert_eq!(
            configure(&[stun], IceTransportPolicy::Relay).map(|v| v.len()),
            Err((String::new(), InvalidIceServer::RelayWithoutTurn))
        );
        let many = IceServer {
            urls: vec!["stun:127.0.0.1".into(); MAX_ICE_SERVER_URLS + 1],
            ..IceServer::default()
        };
        assert!(matches!(
            configure(&[many], all),
            Err((_, InvalidIceServer::TooMany))
        ));
        assert_eq!(
            configure(&[IceServer::default()], all).map(|v| v.len()),
            Err((String::new(), InvalidIceServer::NoUrls))
        );
    }
}
