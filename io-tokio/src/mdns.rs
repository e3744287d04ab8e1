//! Resolving peers' `.local` candidates with mDNS, for the mesh (which does no DNS): browsers
//! hide their host addresses behind such names. [`rtcmesh::MdnsResolver`] takes the mesh's
//! names and hands back the answers; this file is only the asking, with `mdns-sd`.
//!
//! With the `mdns` feature (on by default) an `mdns-sd` daemon asks the LAN. It starts on the
//! first name (its thread and its socket on port 5353 exist only once a peer sent one) and
//! is shut down with the loop. Without the feature, or if the daemon cannot start (no
//! multicast-capable interface), every name is answered "did not resolve" at once, so the
//! mesh counts it (`mdns_names_unresolved`) instead of waiting for its timeout.

/// The loop's resolver.
#[cfg(feature = "mdns")]
pub(crate) type Resolver = rtcmesh::MdnsResolver<daemon::Daemon>;
/// The loop's resolver: without the feature, every name is answered "not resolved".
#[cfg(not(feature = "mdns"))]
pub(crate) type Resolver = rtcmesh::MdnsResolver<rtcmesh::NoMdns>;

/// A resolver whose daemon (if any) starts on the first name.
pub(crate) fn resolver() -> Resolver {
    Resolver::new(Default::default())
}

#[cfg(feature = "mdns")]
mod daemon {
    use std::net::IpAddr;
    use std::time::Duration;

    use mdns_sd::{HostnameResolutionEvent, Receiver, ServiceDaemon, TryRecvError};

    /// `mdns-sd`'s daemon, started on the first name.
    #[derive(Default)]
    pub(crate) struct Daemon {
        daemon: Option<ServiceDaemon>,
        /// The daemon could not start: nothing is asked.
        unavailable: bool,
    }

    impl std::fmt::Debug for Daemon {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Daemon")
                .field("running", &self.daemon.is_some())
                .finish()
        }
    }

    impl rtcmesh::MdnsLookup for Daemon {
        type Pending = Receiver<HostnameResolutionEvent>;

        fn ask(&mut self, name: &str, timeout: Duration) -> Option<Self::Pending> {
            if self.unavailable {
                return None;
            }
            if self.daemon.is_none() {
                match ServiceDaemon::new() {
                    Ok(daemon) => self.daemon = Some(daemon),
                    Err(_) => {
                        self.unavailable = true;
                        return None;
                    }
                }
            }
            self.daemon
                .as_ref()?
                .resolve_hostname(&fqdn(name), Some(timeout.as_millis() as u64))
                .ok()
        }

        fn answer(&mut self, events: &mut Self::Pending) -> Option<Vec<IpAddr>> {
            loop {
                match events.try_recv() {
                    Ok(HostnameResolutionEvent::AddressesFound(_, found)) => {
                        return Some(found.iter().map(|a| a.to_ip_addr()).collect());
                    }
                    Ok(HostnameResolutionEvent::SearchTimeout(_))
                    | Ok(HostnameResolutionEvent::SearchStopped(_))
                    | Err(TryRecvError::Disconnected) => return Some(Vec::new()),
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => return None,
                }
            }
        }

        fn stop(&mut self, name: &str, _events: Self::Pending) {
            if let Some(daemon) = &self.daemon {
                let _ = daemon.stop_resolve_hostname(&fqdn(name));
            }
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            if let Some(daemon) = self.daemon.take() {
                // Its thread ends on its own; nothing waits for it.
                let _ = daemon.shutdown();
            }
        }
    }

    /// The fully qualified name the daemon takes (`<label>.local.`).
    fn fqdn(name: &str) -> String {
        format!("{name}.")
    }
}
