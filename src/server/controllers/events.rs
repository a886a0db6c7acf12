//! core/v1 Events from a controller, which `kubectl describe` lists under the object
//! ("Normal SuccessfulCreate … Created pod: web-7xkq2"). Recording is best effort, as
//! client-go's recorder: a failed Event is logged and the controller goes on.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    /// kube's component name, e.g. `replicaset-controller`.
    component: &'static str,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    pub async fn record(&self, regarding: ObjectReference, kind: Type, reason: &str, message: String) {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Time(crate::model::time::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", regarding.name.as_deref().unwrap_or_default())),
                ..ObjectMeta::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(format!("{kind:?}")),
            source: Some(EventSource { component: Some(self.component.into()), host: None }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(err) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(%err, component = self.component, reason, "recording an event failed");
        }
    }
}
