//! `rtcmesh-tokio`: the tokio adapter for [`rtcmesh`] (one `tokio::net::UdpSocket`, a signaling
//! client and server).
//!
//! Not implemented yet: this crate is reserved in the workspace and carries no API so far.
//! Until it lands, drive [`rtcmesh::Mesh`] from your own task as shown in its crate docs.

pub use rtcmesh;
