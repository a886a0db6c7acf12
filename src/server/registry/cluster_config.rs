//! The cluster's network settings, as `nodectl server`'s flags give them, and the ConfigMap
//! `kube-system/nodectl-cluster` through which the node daemons learn them (kube-proxy and
//! the kubelet are given the same facts by flags on every node; here the server says them
//! once).

use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde_json::json;

use super::error::RegistryError;
use super::objects::{self, FieldValidation, Part, Store};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "nodectl-cluster";

/// kube-controller-manager's default pod range, as kubeadm and flannel set it.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// kube-controller-manager's --node-cidr-mask-size for IPv4.
pub const DEFAULT_NODE_CIDR_MASK_SIZE: u8 = 24;
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// Where the nodes' pod ranges come from (--cluster-cidr).
    pub cluster_cidr: Ipv4Net,
    /// The prefix length of one node's range (--node-cidr-mask-size).
    pub node_cidr_mask_size: u8,
    /// Where Services' cluster IPs come from (--service-cluster-ip-range).
    pub service_cidr: Ipv4Net,
    /// The DNS suffix of Services and pods (--cluster-domain).
    pub cluster_domain: String,
    /// Where Services' node ports come from (--service-node-port-range).
    pub node_ports: RangeInclusive<u16>,
    /// Where ServiceLB takes LoadBalancer Services' addresses from (--service-lb-pool);
    /// None: the nodes' addresses.
    pub service_lb_pool: Option<Ipv4Net>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "--node-cidr-mask-size: {mask} is shorter than the prefix of --cluster-cidr {cidr}: a node's range must fit in the cluster's"
    )]
    MaskTooShort { mask: u8, cidr: Ipv4Net },
    #[error("--node-cidr-mask-size: {mask} is longer than 30: a node's range needs room for its gateway and pods")]
    MaskTooLong { mask: u8 },
    #[error(
        "--node-cidr-mask-size: {mask} cuts --cluster-cidr {cidr} into more than 65536 node ranges (kube's limit: at most 16 bits between the two prefixes)"
    )]
    TooManyRanges { mask: u8, cidr: Ipv4Net },
}

impl ClusterNetwork {
    /// Checks what the flags cannot check one by one, as kube-controller-manager's CIDR
    /// set refuses a node mask that does not fit the cluster range.
    pub fn check(&self) -> Result<(), SettingsError> {
        let (mask, cidr) = (self.node_cidr_mask_size, self.cluster_cidr);
        if mask < cidr.prefix_len() {
            return Err(SettingsError::MaskTooShort { mask, cidr });
        }
        if mask > 30 {
            return Err(SettingsError::MaskTooLong { mask });
        }
        if mask - cidr.prefix_len() > 16 {
            return Err(SettingsError::TooManyRanges { mask, cidr });
        }
        Ok(())
    }

    /// The ConfigMap's data, as the contract between the server and the nodes names it.
    pub fn data(&self) -> serde_json::Value {
        json!({
            "clusterCIDR": self.cluster_cidr.to_string(),
            "serviceCIDR": self.service_cidr.to_string(),
            "clusterDomain": self.cluster_domain,
            "nodePortRange": format!("{}-{}", self.node_ports.start(), self.node_ports.end()),
        })
    }
}

/// Writes the ConfigMap from `net`: created, or its data replaced when it says anything
/// else (a server restarted with other flags must not leave the old values standing).
pub async fn write(store: &Store, net: &ClusterNetwork) -> Result<(), RegistryError> {
    let r = super::resources::find("", "v1", "configmaps")
        .ok_or_else(|| RegistryError::internal("configmaps are not served"))?;
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "nodectl-server"}},
        "data": net.data(),
    });
    let checks = (FieldValidation::Strict, None, false);
    match objects::create_value(store.clone(), r, Some(NAMESPACE.into()), body.clone(), checks.clone()).await {
        Ok(_) => return Ok(()),
        Err(RegistryError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let stored = objects::get(store.clone(), r, Some(NAMESPACE.into()), NAME.into()).await?;
    if stored["data"] == body["data"] {
        return Ok(());
    }
    let bytes = body.to_string().into_bytes();
    objects::update(store.clone(), r, Some(NAMESPACE.into()), NAME.into(), Part::Main, &bytes, checks).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(cidr: &str, mask: u8) -> ClusterNetwork {
        ClusterNetwork {
            cluster_cidr: cidr.parse().unwrap(),
            node_cidr_mask_size: mask,
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            node_ports: 30000..=32767,
            service_lb_pool: None,
        }
    }

    #[test]
    fn a_node_mask_must_fit_the_cluster_range() {
        assert!(net("10.244.0.0/16", 24).check().is_ok());
        let e = net("10.244.0.0/16", 12).check().unwrap_err().to_string();
        assert!(
            e.contains("--node-cidr-mask-size: 12 is shorter than the prefix of --cluster-cidr 10.244.0.0/16"),
            "{e}"
        );
        assert!(net("10.0.0.0/8", 25).check().unwrap_err().to_string().contains("more than 65536"));
        assert!(net("10.0.0.0/24", 31).check().unwrap_err().to_string().contains("longer than 30"));
    }

    #[test]
    fn the_configmap_says_what_the_contract_names() {
        assert_eq!(
            net("10.244.0.0/16", 24).data(),
            json!({"clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12", "clusterDomain": "cluster.local", "nodePortRange": "30000-32767"})
        );
    }
}
