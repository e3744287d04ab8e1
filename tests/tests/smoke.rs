use std::time::Duration;

use rtcmesh::{MeshConfig, Target, TransferMode};
use rtcmesh_tests::World;

#[test]
fn two_peers_connect_and_exchange() {
    let mut w = World::mesh(&[1, 2], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), |w| w.fully_connected()), "{:?} {:?}", w.nodes[0].events, w.nodes[1].signal_errors);
    w.nodes[0].mesh.send(Target::Peer(2), TransferMode::Reliable, 0, b"hi").unwrap();
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[1].packets().is_empty()));
    println!("connected after {:?}", w.elapsed());
}
