//! Who a proxy is, from its Envoy node: `sidecar~IP~POD.NS~NS.svc.DOMAIN` or
//! `router~…`, and the metadata Istio's agent sets (CLUSTER_ID, NETWORK, MESH_ID,
//! NAMESPACE, SERVICE_ACCOUNT, LABELS, REQUESTED_NETWORK_VIEW).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use isthmus_model::{ClusterId, NetworkId};
use serde::Serialize;

/// A proxy's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Sidecar,
    Router,
}

/// A connected proxy, as generation sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proxy {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: IpAddr,
    pub pod: String,
    pub namespace: String,
    pub cluster: ClusterId,
    pub network: NetworkId,
    pub mesh_id: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// Networks a gateway serves (routers only).
    pub requested_network_view: Vec<NetworkId>,
    /// Whether the proxy's agent serves it the workload certificate over SDS (node
    /// metadata `SDS: "true"`, Istio's old name for it): only then is it given mesh
    /// mTLS, whose secrets come from there.
    pub sds: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error(
        "node id {0:?} is not TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN with TYPE sidecar or router (check the agent's bootstrap)"
    )]
    BadId(String),
    #[error("node id {id:?}: {ip:?} is not an IP address")]
    BadIp { id: String, ip: String },
    #[error(
        "the first request on a stream carries no node: the proxy's bootstrap must set node.id and node.metadata"
    )]
    NoNode,
}

fn string(v: &Value) -> Option<String> {
    match &v.kind {
        Some(ValueKind::StringValue(s)) => Some(s.clone()),
        Some(ValueKind::NumberValue(n)) => Some(n.to_string()),
        Some(ValueKind::BoolValue(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn field(meta: Option<&Struct>, key: &str) -> Option<String> {
    meta.and_then(|m| m.fields.get(key)).and_then(string)
}

impl Proxy {
    /// Reads a proxy from its Envoy node.
    pub fn from_node(node: &Node) -> Result<Self, ProxyError> {
        let id = node.id.clone();
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, pod_ns, _domain] = parts.as_slice() else {
            return Err(ProxyError::BadId(id));
        };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            _ => return Err(ProxyError::BadId(id)),
        };
        let ip: IpAddr = ip.parse().map_err(|_| ProxyError::BadIp {
            id: id.clone(),
            ip: ip.to_string(),
        })?;
        let (pod, ns_from_id) = pod_ns
            .rsplit_once('.')
            .ok_or_else(|| ProxyError::BadId(id.clone()))?;
        let meta = node.metadata.as_ref();
        let labels = match meta
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| v.kind.as_ref())
        {
            Some(ValueKind::StructValue(s)) => s
                .fields
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), string(v)?)))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Self {
            kind,
            ip,
            pod: pod.to_string(),
            namespace: field(meta, "NAMESPACE").unwrap_or_else(|| ns_from_id.to_string()),
            cluster: ClusterId::new(&field(meta, "CLUSTER_ID").unwrap_or_default()),
            network: NetworkId::new(&field(meta, "NETWORK").unwrap_or_default()),
            mesh_id: field(meta, "MESH_ID").unwrap_or_default(),
            service_account: field(meta, "SERVICE_ACCOUNT").unwrap_or_else(|| "default".into()),
            labels,
            requested_network_view: field(meta, "REQUESTED_NETWORK_VIEW")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(NetworkId::new)
                        .collect()
                })
                .unwrap_or_default(),
            sds: field(meta, "SDS").is_some_and(|v| v == "true"),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(v.into())),
        }
    }

    #[test]
    fn reads_istio_node_ids_and_metadata() {
        let mut fields = std::collections::HashMap::new();
        fields.insert("CLUSTER_ID".to_string(), s("cluster1"));
        fields.insert("NETWORK".to_string(), s("network1"));
        fields.insert("SERVICE_ACCOUNT".to_string(), s("bookinfo-reviews"));
        fields.insert(
            "REQUESTED_NETWORK_VIEW".to_string(),
            s("network1, network2"),
        );
        let mut labels = std::collections::HashMap::new();
        labels.insert("app".to_string(), s("reviews"));
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(ValueKind::StructValue(Struct { fields: labels })),
            },
        );
        let node = Node {
            id: "sidecar~198.18.1.10~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let p = Proxy::from_node(&node).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip.to_string(), "198.18.1.10");
        assert_eq!(p.pod, "reviews-v1-abc");
        assert_eq!(p.namespace, "bookinfo");
        assert_eq!(p.cluster.as_str(), "cluster1");
        assert_eq!(p.network.as_str(), "network1");
        assert_eq!(p.labels.get("app").map(String::as_str), Some("reviews"));
        assert_eq!(
            p.requested_network_view,
            vec![NetworkId::new("network1"), NetworkId::new("network2")]
        );
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        for id in [
            "",
            "sidecar~1.2.3.4",
            "gateway~1.2.3.4~a.b~b.svc.cluster.local",
            "sidecar~x~a.b~b.svc.cluster.local",
            "sidecar~1.2.3.4~nodot~x",
        ] {
            let node = Node {
                id: id.into(),
                ..Default::default()
            };
            assert!(Proxy::from_node(&node).is_err(), "{id}");
        }
    }
}
