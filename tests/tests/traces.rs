//! `tracing` output: one `mesh` span per mesh and one `peer` span per peer inside it, with the
//! ids as fields; events for connect, ICE restart and loss (with its reason) name their peer's
//! span; nothing is logged per packet.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtcmesh::{MeshConfig, Target, TransferMode};
use rtcmesh_tests::World;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Fields as text.
#[derive(Default, Debug, Clone)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().into(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().into(), value.into()));
    }
}

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    fields: Fields,
    parent: Option<u64>,
}

#[derive(Debug, Clone)]
struct EventRecord {
    level: Level,
    parent: Option<u64>,
    fields: Fields,
}

/// Records rtcmesh's spans and events (str0m's own are not asked for).
#[derive(Default, Clone)]
struct Recorder {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, SpanRecord>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("rtcmesh")
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.spans.lock().unwrap().insert(
            id,
            SpanRecord {
                name: attrs.metadata().name(),
                fields,
                parent: attrs.parent().map(Id::into_u64),
            },
        );
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.events.lock().unwrap().push(EventRecord {
            level: *event.metadata().level(),
            parent: event.parent().map(Id::into_u64),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Recorder {
    /// The events in the span of peer `peer` inside the mesh with id `mesh`.
    fn peer_events(&self, mesh: i32, peer: i32) -> Vec<EventRecord> {
        let spans = self.spans.lock().unwrap();
        let mesh_span = spans
            .iter()
            .find(|(_, s)| s.name == "mesh" && s.fields.get("id") == Some(&mesh.to_string()))
            .map(|(&id, _)| id)
            .expect("a mesh span");
        let peer_span = spans
            .iter()
            .find(|(_, s)| {
                s.name == "peer"
                    && s.parent == Some(mesh_span)
                    && s.fields.get("id") == Some(&peer.to_string())
            })
            .map(|(&id, _)| id)
            .expect("a peer span inside the mesh span");
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.parent == Some(peer_span))
            .cloned()
            .collect()
    }
}

fn messages(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.level <= Level::INFO)
        .map(|e| e.fields.get("message").unwrap_or("").to_string())
        .collect()
}

#[test]
fn spans_per_mesh_and_peer_mark_connect_restart_and_loss_with_its_reason_and_no_packet() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
        let before = recorder.events.lock().unwrap().len();
        for _ in 0..100 {
            w.tick();
            w.nodes[1]
                .mesh_mut()
                .send(Target::Peer(1), TransferMode::Reliable, 0, b"packet")
                .unwrap();
            w.drain(1);
            w.run_for(Duration::from_millis(10));
        }
        assert_eq!(
            recorder.events.lock().unwrap().len(),
            before,
            "nothing is logged per packet"
        );
        // The path dies: restarts, then the loss.
        w.partition(0, 1, true);
        assert!(w.run_until(Duration::from_secs(15), |w| {
            w.nodes[0].disconnected() == vec![2] && w.nodes[1].disconnected() == vec![1]
        }));
    });
    // Mesh 2 offers: it restarts ICE, and loses peer 1 to silence.
    let events = recorder.peer_events(2, 1);
    assert_eq!(
        messages(&events),
        ["connected", "ICE restart began", "lost"],
        "{events:#?}"
    );
    let lost = events.last().unwrap();
    assert_eq!(
        lost.fields.get("reason"),
        Some("nothing heard for peer_timeout")
    );
    assert_eq!(events[1].fields.get("attempt"), Some("1"));
    // Further attempts are debug-level.
    assert_eq!(
        events
            .iter()
            .filter(|e| e.fields.get("message") == Some("ICE restart tried again"))
            .count(),
        2
    );
    // Mesh 1 follows the restarts, and loses peer 2 the same way.
    assert_eq!(
        messages(&recorder.peer_events(1, 2)),
        ["connected", "ICE restart began", "lost"]
    );
}
