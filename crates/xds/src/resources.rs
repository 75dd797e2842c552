//! Generated resources, by type, with stable content versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The type URLs the server answers, in the order of [`TypeUrl::ALL`].
pub const TYPES: [&str; TypeUrl::COUNT] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// A type of resource the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeUrl {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl TypeUrl {
    pub const COUNT: usize = 4;
    /// In the order Envoy wants them pushed (CDS before EDS, LDS before RDS).
    pub const ALL: [TypeUrl; Self::COUNT] =
        [Self::Cluster, Self::Endpoint, Self::Listener, Self::Route];

    pub const fn as_str(self) -> &'static str {
        TYPES[self as usize]
    }

    /// Its position in [`TypeUrl::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The short name for logs and the debug API (`cds`, `eds`, `lds`, `rds`).
    pub const fn short(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::Endpoint => "eds",
            Self::Listener => "lds",
            Self::Route => "rds",
        }
    }

    /// Whether a SotW request without names subscribes to everything of the type.
    pub const fn wildcard_by_default(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }
}

impl std::fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type URL the server does not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a type this server answers (it answers {CLUSTER}, {ENDPOINT}, {LISTENER} and {ROUTE})"
)]
pub struct UnknownType(pub String);

impl std::str::FromStr for TypeUrl {
    type Err = UnknownType;

    fn from_str(s: &str) -> Result<Self, UnknownType> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownType(s.to_string()))
    }
}

/// Short name of a type URL for logs and the debug API (`cds`, `eds`, `lds`, `rds`).
pub fn short(type_url: &str) -> &'static str {
    type_url.parse().map_or("unknown", TypeUrl::short)
}

/// One value for each type, indexed by [`TypeUrl`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PerType<T>([T; TypeUrl::COUNT]);

impl<T> PerType<T> {
    pub(crate) fn from_fn(f: impl FnMut(TypeUrl) -> T) -> Self {
        Self(TypeUrl::ALL.map(f))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (TypeUrl, &T)> {
        TypeUrl::ALL.into_iter().zip(&self.0)
    }
}

impl<T> std::ops::Index<TypeUrl> for PerType<T> {
    type Output = T;
    fn index(&self, t: TypeUrl) -> &T {
        &self.0[t.index()]
    }
}

impl<T> std::ops::IndexMut<TypeUrl> for PerType<T> {
    fn index_mut(&mut self, t: TypeUrl) -> &mut T {
        &mut self.0[t.index()]
    }
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

    /// The resources of a type the server answers.
    pub fn of_type(&self, t: TypeUrl) -> Option<&ByName> {
        self.by_type.get(t.as_str())
    }

    /// Removes a resource of a type by name.
    pub fn remove(&mut self, type_url: &str, name: &str) -> Option<Resource> {
        self.by_type.get_mut(type_url)?.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_read_back_and_keep_their_order() {
        for (i, t) in TypeUrl::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i);
            assert_eq!(t.as_str().parse::<TypeUrl>(), Ok(t));
            assert_eq!(short(t.as_str()), t.short());
        }
        assert_eq!(TypeUrl::Endpoint.as_str(), ENDPOINT);
        let e = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            .parse::<TypeUrl>()
            .unwrap_err();
        assert!(e.to_string().contains("Secret"), "{e}");
        assert_eq!(short("x"), "unknown");
        assert!(TypeUrl::Cluster.wildcard_by_default() && !TypeUrl::Route.wildcard_by_default());
    }
}
