//! Audit-mode findings as Kubernetes Events on the AgentPool, so a platform team sees them
//! with `kubectl describe agentpool` without reading logs. Off the admission hot path: the
//! request only tries to queue a finding (dropped when the queue is full); a background task
//! writes the Events (kube-rs Recorder, which folds repeats into series).

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::crd::GROUP;
use super::rules::Violation;

/// A violation and the object it was found on.
#[derive(Clone, Debug)]
pub struct Finding {
    pub violation: Violation,
    /// `Kind namespace/name` of the admitted object.
    pub object: String,
}

/// Where the API layer drops findings; `none()` in tests and offline commands.
#[derive(Clone, Debug, Default)]
pub struct EventSink(Option<mpsc::Sender<Finding>>);

impl EventSink {
    pub fn none() -> Self {
        EventSink(None)
    }

    /// Queues a finding without waiting; a full queue drops it (the log line and the metric
    /// still count it).
    pub fn report(&self, finding: Finding) {
        if let Some(tx) = &self.0
            && tx.try_send(finding).is_err()
        {
            tracing::debug!("event queue full; finding not written as an Event");
        }
    }
}

/// Starts the Event writer.
pub fn spawn(client: Client, instance: Option<String>) -> EventSink {
    let (tx, mut rx) = mpsc::channel::<Finding>(1024);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "wi-webhook".into(),
            instance,
        },
    );
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(format!("{GROUP}/v1alpha1")),
                kind: Some("AgentPool".into()),
                name: Some(f.violation.pool.clone()),
                ..Default::default()
            };
            let mut note = format!("{}: {}", f.object, f.violation);
            if note.len() > 1000 {
                let mut cut = 997;
                while !note.is_char_boundary(cut) {
                    cut -= 1;
                }
                note.truncate(cut);
                note.push_str("...");
            }
            let event = Event {
                type_: EventType::Warning,
                reason: "PoolViolation".into(),
                note: Some(note),
                action: format!("Admission{}", f.violation.enforcement.as_str()),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(pool = %f.violation.pool, error = %e, "cannot write the Event");
            }
        }
    });
    EventSink(Some(tx))
}
