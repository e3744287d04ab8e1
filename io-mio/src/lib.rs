//! `rtcmesh-mio`: the mio adapter for [`rtcmesh`], for custom event loops.
//!
//! Not implemented yet: this crate is reserved in the workspace and carries no API so far.
//! Until it lands, drive [`rtcmesh::Mesh`] from your `mio::Poll` loop as shown in its crate docs.

pub use rtcmesh;
