//! Audit-mode findings, and uses of the break-glass lists, as Kubernetes Events on the
//! AgentPool, so a platform team sees them with `kubectl describe agentpool` without
//! reading logs. Off the admission hot path: the
//! request only tries to queue a finding (dropped when the queue is full); a background task
//! writes the Events (kube-rs Recorder, which folds repeats into series).

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::access::Grant;
use super::crd::GROUP;
use super::rules::Violation;

/// A violation and the object it was found on.
#[derive(Clone, Debug)]
pub struct Finding {
    pub violation: Violation,
    /// `Kind namespace/name` of the admitted object.
    pub object: String,
}

/// What becomes an Event.
#[derive(Clone, Debug)]
enum Record {
    Finding(Finding),
    Grant(Grant),
}

/// Where the API layer drops findings; `none()` in tests and offline commands.
#[derive(Clone, Debug, Default)]
pub struct EventSink(Option<mpsc::Sender<Record>>);

impl EventSink {
    pub fn none() -> Self {
        EventSink(None)
    }

    /// Queues a finding without waiting; a full queue drops it (the log line and the metric
    /// still count it).
    pub fn report(&self, finding: Finding) {
        self.send(Record::Finding(finding));
    }

    /// Queues a use of a break-glass list, as [`EventSink::report`] does.
    pub fn grant(&self, grant: Grant) {
        self.send(Record::Grant(grant));
    }

    fn send(&self, record: Record) {
        if let Some(tx) = &self.0
            && tx.try_send(record).is_err()
        {
            tracing::debug!("event queue full; record not written as an Event");
        }
    }
}

/// Starts the Event writer.
pub fn spawn(client: Client, instance: Option<String>) -> EventSink {
    let (tx, mut rx) = mpsc::channel::<Record>(1024);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "wi-webhook".into(),
            instance,
        },
    );
    tokio::spawn(async move {
        while let Some(record) = rx.recv().await {
            let (pool, event) = match record {
                Record::Finding(f) => (
                    f.violation.pool.clone(),
                    Event {
                        type_: EventType::Warning,
                        reason: "PoolViolation".into(),
                        note: Some(note(format!("{}: {}", f.object, f.violation))),
                        action: format!("Admission{}", f.violation.enforcement.as_str()),
                        secondary: None,
                    },
                ),
                Record::Grant(g) => (
                    g.pool.clone(),
                    Event {
                        type_: EventType::Normal,
                        reason: "BreakGlassAccess".into(),
                        note: Some(note(g.to_string())),
                        action: "AdmissionAllowed".into(),
                        secondary: None,
                    },
                ),
            };
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(format!("{GROUP}/v1alpha1")),
                kind: Some("AgentPool".into()),
                name: Some(pool.clone()),
                ..Default::default()
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(pool = %pool, error = %e, "cannot write the Event");
            }
        }
    });
    EventSink(Some(tx))
}

/// An Event's note is at most 1 kB: longer ones are cut at a character boundary.
fn note(mut note: String) -> String {
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}
