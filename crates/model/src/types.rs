//! Mesh identifiers. Strings that repeat across many endpoints (cluster, network,
//! namespace, label keys and values, localities) are interned: equal values share
//! one allocation and compare by pointer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use internment::ArcIntern;
use serde::{Deserialize, Serialize};

/// An interned string.
pub type Str = ArcIntern<str>;

/// Interns a string.
pub fn intern(s: &str) -> Str {
    ArcIntern::from(s)
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Str);

        impl $name {
            pub fn new(s: &str) -> Self {
                Self(intern(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A cluster's name, as in `mesh.yaml` and the `topology.istio.io/cluster` label.
    ClusterId
);
id_type!(
    /// A network's name, as in meshNetworks and the `topology.istio.io/network` label.
    NetworkId
);
id_type!(
    /// A fully qualified service hostname: `NAME.NS.svc.DOMAIN`, or a ServiceEntry host.
    Hostname
);

/// Label key of a workload's cluster.
pub const LABEL_CLUSTER: &str = "topology.istio.io/cluster";
/// Label key of a workload's (or a namespace's, or a gateway Service's) network.
pub const LABEL_NETWORK: &str = "topology.istio.io/network";
/// Label overriding the east-west gateway's port on a gateway Service.
pub const LABEL_GATEWAY_PORT: &str = "networking.istio.io/gatewayPort";
/// Pod label carrying a locality as `region.zone.subzone`.
pub const LABEL_ISTIO_LOCALITY: &str = "istio-locality";
/// Node labels carrying a locality.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_SUBZONE: &str = "topology.istio.io/subzone";
/// Annotation restricting where a Service is visible.
pub const ANNOTATION_EXPORT_TO: &str = "networking.istio.io/exportTo";
/// The east-west gateway port Istio uses unless a label says otherwise.
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;

/// Labels of a workload. Interned: every endpoint of one Deployment shares one map.
pub type Labels = ArcIntern<BTreeMap<Str, Str>>;

/// Builds an interned label map.
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    ArcIntern::new(
        pairs
            .into_iter()
            .map(|(k, v)| (intern(k), intern(v)))
            .collect(),
    )
}

/// Where a workload runs: region, zone and subzone; any may be empty.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalityParts {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// An interned locality.
pub type Locality = ArcIntern<LocalityParts>;

impl LocalityParts {
    /// Parses Istio's `region.zone.subzone` (the `istio-locality` label) form.
    pub fn from_label(s: &str) -> Self {
        let mut it = s.splitn(3, '.');
        Self {
            region: it.next().unwrap_or_default().to_string(),
            zone: it.next().unwrap_or_default().to_string(),
            subzone: it.next().unwrap_or_default().to_string(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl fmt::Display for LocalityParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return Ok(());
        }
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)
    }
}

impl fmt::Debug for LocalityParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// The protocol of a service port, from its name prefix or appProtocol (Istio's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    Mongo,
    Redis,
    Mysql,
    Udp,
    Unsupported,
}

impl Protocol {
    /// Istio's protocol selection: `appProtocol` first, then the port name's prefix
    /// (`http`, `http-x`, `grpc-web`…); anything else is treated as opaque TCP.
    pub fn select(name: Option<&str>, app_protocol: Option<&str>, proto: Option<&str>) -> Self {
        if proto.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        if let Some(p) = app_protocol.and_then(Self::parse) {
            return p;
        }
        match name {
            Some(n) => {
                let prefix = n.split('-').next().unwrap_or(n);
                Self::parse(prefix).unwrap_or(Protocol::Unsupported)
            }
            None => Protocol::Unsupported,
        }
    }

    /// Parses a protocol name (case-insensitive), as in Gateway and ServiceEntry ports.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "kubernetes.io/h1c" => Protocol::Http,
            "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// The name Istio uses, e.g. `HTTP`, `GRPC`, `TCP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::Udp => "UDP",
            Protocol::Unsupported => "UNSUPPORTED",
        }
    }

    /// Whether the proxy handles this port with an HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload identity: `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Shared, immutable.
pub type Shared<T> = Arc<T>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_ids_share_storage() {
        let a = ClusterId::new("cluster1");
        let b = ClusterId::new(&String::from("cluster1"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str().as_ptr(), b.as_str().as_ptr()));
        let l1 = labels([("app", "reviews"), ("version", "v1")]);
        let l2 = labels([("version", "v1"), ("app", "reviews")]);
        assert_eq!(l1, l2);
    }

    #[test]
    fn protocol_selection_follows_istio() {
        assert_eq!(Protocol::select(Some("http"), None, None), Protocol::Http);
        assert_eq!(
            Protocol::select(Some("http-web"), None, None),
            Protocol::Http
        );
        assert_eq!(
            Protocol::select(Some("grpc-web"), None, None),
            Protocol::Grpc
        );
        assert_eq!(
            Protocol::select(Some("web"), Some("http2"), None),
            Protocol::Http2
        );
        assert_eq!(Protocol::select(Some("tls"), None, None), Protocol::Tls);
        assert_eq!(
            Protocol::select(Some("foo"), None, None),
            Protocol::Unsupported
        );
        assert_eq!(Protocol::select(None, None, Some("UDP")), Protocol::Udp);
    }

    #[test]
    fn locality_label_form() {
        let l = LocalityParts::from_label("us-east.us-east-1a.rack4");
        assert_eq!(l.to_string(), "us-east/us-east-1a/rack4");
        assert_eq!(LocalityParts::from_label("eu").to_string(), "eu//");
    }
}
