//! What a pod asks of a node and what a node has to give: cpu (millicores), memory,
//! ephemeral storage (bytes) and a pod slot, as kube-scheduler's NodeResourcesFit counts
//! them.

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

use crate::model::quantity::{cpu_millis, memory_bytes};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
}

impl Resources {
    fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let get = |name: &str, parse: fn(&str) -> Result<i64, String>| {
            list.and_then(|l| l.get(name)).and_then(|q| parse(&q.0).ok()).unwrap_or(0).max(0)
        };
        Resources {
            milli_cpu: get("cpu", cpu_millis),
            memory: get("memory", memory_bytes),
            ephemeral_storage: get("ephemeral-storage", memory_bytes),
            pods: get("pods", |t| t.parse::<i64>().map_err(|e| e.to_string())),
        }
    }

    /// What a node offers: its allocatable, or its capacity when it reports none.
    pub fn of_node(node: &Node) -> Resources {
        let status = node.status.as_ref();
        let list = status.and_then(|s| s.allocatable.as_ref()).or_else(|| status.and_then(|s| s.capacity.as_ref()));
        Resources::from_list(list)
    }

    /// What a pod asks for: the larger of its containers' sum and its largest init
    /// container (they run one at a time, before the others), plus its overhead; one pod.
    pub fn requests_of(spec: &PodSpec) -> Resources {
        let of = |c: &Container| Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        let mut sum = spec.containers.iter().map(of).fold(Resources::default(), |a, b| a.plus(&b));
        for init in spec.init_containers.iter().flatten().map(of) {
            sum.milli_cpu = sum.milli_cpu.max(init.milli_cpu);
            sum.memory = sum.memory.max(init.memory);
            sum.ephemeral_storage = sum.ephemeral_storage.max(init.ephemeral_storage);
        }
        sum = sum.plus(&Resources::from_list(spec.overhead.as_ref()));
        sum.pods = 1;
        sum
    }

    pub fn plus(&self, o: &Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
            ephemeral_storage: self.ephemeral_storage.saturating_add(o.ephemeral_storage),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    pub fn minus(&self, o: &Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(o.milli_cpu),
            memory: self.memory.saturating_sub(o.memory),
            ephemeral_storage: self.ephemeral_storage.saturating_sub(o.ephemeral_storage),
            pods: self.pods.saturating_sub(o.pods),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_asks_for_its_containers_sum_or_its_largest_init_container_plus_overhead() {
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}}},
            ],
            "overhead": {"cpu": "10m"},
        }))
        .unwrap();
        let r = Resources::requests_of(&spec);
        assert_eq!(r, Resources { milli_cpu: 2010, memory: 200 << 20, ephemeral_storage: 0, pods: 1 });
    }

    #[test]
    fn a_node_offers_its_allocatable_or_else_its_capacity() {
        let node: Node = serde_json::from_value(json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3500m", "memory": "7Gi", "pods": "110"}}}))
        .unwrap();
        assert_eq!(Resources::of_node(&node).milli_cpu, 3500);
        let bare: Node = serde_json::from_value(json!({"status": {"capacity": {"cpu": "2", "pods": "10"}}})).unwrap();
        assert_eq!(Resources::of_node(&bare), Resources { milli_cpu: 2000, memory: 0, ephemeral_storage: 0, pods: 10 });
    }
}
