//! Publishing Kubernetes Events (`events.k8s.io/v1`), as both binaries do.
//!
//! kube-runtime's `Recorder` counts an Event as a repeat of an earlier one when the type,
//! reason, action and object match, *whatever its note says*: its `EventKey` has no note. A
//! Service that was given `192.0.2.9` and five minutes later `192.0.2.20` then shows a second
//! "Assigned IP [192.0.2.9]" (the first Event, its series count raised), and the user never
//! learns the new address. Found by the chaos run's narrowed pool. This recorder keys on the
//! note too: the same message again raises the count (as `kubectl get events` shows it), a
//! different one is a new Event.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long an Event counts as the one a repeat adds to (kube-runtime's and client-go's 6
/// minutes). Older entries leave the cache at the next publish, so it stays bounded by what
/// was said in that time.
const REPEAT_WINDOW: Duration = Duration::from_secs(6 * 60);

/// What makes two Events the same: everything kube-runtime compares, and the note.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
    regarding: ObjectKey,
    related: Option<ObjectKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectKey {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for ObjectKey {
    fn from(object: &ObjectReference) -> Self {
        ObjectKey {
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
        }
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// Publishes Events on objects; cheap to clone (the clones share one cache).
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    cache: std::sync::Arc<Mutex<HashMap<Key, (Instant, K8sEvent)>>>,
}

impl EventRecorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> EventRecorder {
        EventRecorder {
            client,
            reporter,
            cache: Default::default(),
        }
    }

    fn key(event: &Event, regarding: &ObjectReference) -> Key {
        Key {
            type_: type_name(event.type_),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
            regarding: regarding.into(),
            related: event.secondary.as_ref().map(Into::into),
        }
    }

    /// A new Event object (named like kube-runtime's: the object's name and the time).
    fn new_event(&self, event: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(type_name(event.type_).to_string()),
            related: event.secondary.clone(),
            ..Default::default()
        }
    }

    /// Publishes `event` on `regarding`: a new Event, or the earlier one with the same note
    /// (within [`REPEAT_WINDOW`]) with its series count raised.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = Self::key(event, regarding);
        let repeat = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.retain(|_, (at, _)| at.elapsed() < REPEAT_WINDOW);
            cache.get(&key).map(|(_, earlier)| earlier.clone())
        };
        let events: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let published = match repeat {
            Some(mut earlier) => {
                earlier.series = Some(EventSeries {
                    count: earlier.series.as_ref().map_or(2, |s| s.count + 1),
                    last_observed_time: MicroTime(Timestamp::now()),
                });
                let name = earlier.metadata.name.clone().unwrap_or_default();
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&earlier))
                    .await?;
                earlier
            }
            None => {
                let fresh = self.new_event(event, regarding);
                events.create(&PostParams::default(), &fresh).await?;
                fresh
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (Instant::now(), published));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "IPAllocated".to_string(),
            note: Some(note.to_string()),
            action: "Allocate".to_string(),
            secondary: None,
        }
    }

    #[test]
    fn a_different_note_is_a_different_event() {
        let service = ObjectReference {
            kind: Some("Service".to_string()),
            namespace: Some("default".to_string()),
            name: Some("web".to_string()),
            uid: Some("u1".to_string()),
            ..Default::default()
        };
        let first = EventRecorder::key(&event("Assigned IP [192.0.2.9]"), &service);
        let again = EventRecorder::key(&event("Assigned IP [192.0.2.9]"), &service);
        let moved = EventRecorder::key(&event("Assigned IP [192.0.2.20]"), &service);
        assert_eq!(first, again);
        assert_ne!(first, moved);
    }
}
