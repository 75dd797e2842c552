//! Generated resources, by type, with stable content versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The types the server answers, in the order Envoy wants them pushed (CDS before
/// EDS, LDS before RDS).
pub const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Short name of a type URL for logs and the debug API (`cds`, `eds`, `lds`, `rds`).
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        _ => "unknown",
    }
}

/// Whether a SotW request without names subscribes to everything of its type.
pub fn wildcard_by_default(type_url: &str) -> bool {
    matches!(type_url, CLUSTER | LISTENER)
}

/// One resource, encoded, with a version that changes exactly when its content does.
#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    /// Shared: every proxy that receives the resource holds the same bytes.
    pub any: Arc<Any>,
    pub version: String,
}

impl Resource {
    pub fn new<M: Message>(type_url: &str, name: impl Into<String>, msg: &M) -> Self {
        let value = msg.encode_to_vec();
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&value));
        Self {
            name: name.into(),
            any: Arc::new(Any {
                type_url: type_url.to_string(),
                value,
            }),
            version,
        }
    }
}

/// Equal when the name and the content version are: the version is a hash of the
/// encoded content, so the bytes need not be compared.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && (Arc::ptr_eq(&self.any, &other.any)
                || (self.version == other.version && self.any.type_url == other.any.type_url))
    }
}

/// Resources of one type by name. Persistent: a config derived from another (one
/// service's endpoints changed) shares everything else with it, and the two compare
/// in time proportional to what differs.
pub type ByName = imbl::OrdMap<String, Resource>;

/// Everything generated for one proxy: per type URL, resources by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyResources {
    pub by_type: BTreeMap<String, ByName>,
}

impl ProxyResources {
    pub fn add(&mut self, type_url: &str, r: Resource) {
        let map = match self.by_type.get_mut(type_url) {
            Some(m) => m,
            None => self.by_type.entry(type_url.to_string()).or_default(),
        };
        map.insert(r.name.clone(), r);
    }

    pub fn of(&self, type_url: &str) -> Option<&ByName> {
        self.by_type.get(type_url)
    }

    /// Removes a resource of a type by name.
    pub fn remove(&mut self, type_url: &str, name: &str) -> Option<Resource> {
        self.by_type.get_mut(type_url)?.remove(name)
    }
}
