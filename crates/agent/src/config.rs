//! What the agent is told about its proxy: who it is (node id and metadata), where the
//! control plane is, and how Envoy is run.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use crate::Error;

/// The default port of Envoy's admin interface (loopback only).
pub const DEFAULT_ADMIN_PORT: u16 = 15000;
/// The default port of the agent's readiness endpoint, `GET /healthz/ready`.
pub const DEFAULT_READINESS_PORT: u16 = 15021;
/// The default (plaintext) xDS port of the control plane.
pub const DEFAULT_DISCOVERY_PORT: u16 = 15010;
/// How long listeners drain on shutdown before Envoy is stopped.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// What kind of proxy the agent runs: the first field of the node id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// A workload's sidecar (`sidecar~…`).
    #[default]
    Sidecar,
    /// A gateway: ingress or east-west (`router~…`).
    Router,
}

impl ProxyKind {
    /// The node-id spelling Istio uses: `sidecar` or `router`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The control plane's xDS address: `HOST:PORT`, where HOST is an IP address (the
/// bootstrap's `xds-grpc` cluster is then STATIC) or a DNS name (STRICT_DNS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryAddress {
    /// An IP address or a DNS name, without brackets.
    pub host: String,
    pub port: u16,
}

impl DiscoveryAddress {
    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl Default for DiscoveryAddress {
    fn default() -> Self {
        DiscoveryAddress {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: DEFAULT_DISCOVERY_PORT,
        }
    }
}

impl From<SocketAddr> for DiscoveryAddress {
    fn from(addr: SocketAddr) -> Self {
        DiscoveryAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for DiscoveryAddress {
    type Err = Error;

    /// Parses `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::DiscoveryAddress {
            address: s.to_string(),
            reason: reason.to_string(),
        };
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if host.parse::<IpAddr>().is_err() && !valid_name {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        Ok(DiscoveryAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for DiscoveryAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Everything the agent needs to bootstrap and run one Envoy.
///
/// Empty strings mean "not set": such metadata is left out of the bootstrap, as Istio's
/// `omitempty` does.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub kind: ProxyKind,
    /// The pod's IP (`INSTANCE_IP`): the second field of the node id.
    pub node_ip: IpAddr,
    /// The pod's name (`POD_NAME`).
    pub pod_name: String,
    /// The pod's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// Service hostnames are `NAME.NS.svc.DOMAIN_SUFFIX`; default `cluster.local`.
    pub domain_suffix: String,
    /// `CLUSTER_ID`: the cluster the proxy runs in (Istio's default is `Kubernetes`).
    pub cluster_id: String,
    /// `NETWORK`: the proxy's network; picks which endpoints it gets directly and which
    /// through east-west gateways.
    pub network: String,
    /// `MESH_ID`.
    pub mesh_id: String,
    /// `SERVICE_ACCOUNT`: the pod's service account, its identity.
    pub service_account: String,
    /// `LABELS`: the pod's labels.
    pub labels: BTreeMap<String, String>,
    /// `REQUESTED_NETWORK_VIEW` (gateways): the networks whose endpoints this proxy
    /// wants to see; sent comma-separated.
    pub requested_network_view: Vec<String>,
    /// More node metadata, usually from `ISTIO_META_*` variables (see
    /// [`AgentConfig::apply_istio_meta_env`]). The typed fields above win over these
    /// when they are set.
    pub extra_metadata: BTreeMap<String, Value>,
    /// The control plane's xDS address; default `127.0.0.1:15010`.
    pub discovery_address: DiscoveryAddress,
    /// Envoy's admin address; must be a loopback address. Default `127.0.0.1:15000`.
    /// With port 0 Envoy picks a free port; [`crate::Agent::admin_address`] tells which.
    pub admin_address: SocketAddr,
    /// The agent serves `GET /healthz/ready` on `0.0.0.0:PORT`; default 15021 (0: any
    /// free port, see [`crate::Agent::readiness_address`]).
    pub readiness_port: u16,
    /// Where the bootstrap (`envoy-rev.json`) is written; default a fresh temporary
    /// directory, removed when the agent stops.
    pub config_dir: Option<PathBuf>,
    /// The Envoy binary; default: see [`crate::envoy::find`].
    pub envoy_binary: Option<PathBuf>,
    /// How long listeners drain on shutdown before Envoy is stopped; default 5 s.
    pub drain_duration: Duration,
    /// The workload's identity: with it, the agent gets a certificate from the CA and
    /// serves it to Envoy over SDS, and Envoy talks to the control plane over TLS
    /// (checked against the same root). Without it, plaintext xDS and no certificate.
    pub identity: Option<crate::identity::IdentityConfig>,
    /// The SDS socket the bootstrap names; [`crate::Agent::start`] picks one when the
    /// identity is set and this is not.
    pub sds_socket: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            kind: ProxyKind::Sidecar,
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pod_name: String::new(),
            namespace: "default".to_string(),
            domain_suffix: "cluster.local".to_string(),
            cluster_id: String::new(),
            network: String::new(),
            mesh_id: String::new(),
            service_account: String::new(),
            labels: BTreeMap::new(),
            requested_network_view: Vec::new(),
            extra_metadata: BTreeMap::new(),
            discovery_address: DiscoveryAddress::default(),
            admin_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_ADMIN_PORT),
            readiness_port: DEFAULT_READINESS_PORT,
            config_dir: None,
            envoy_binary: None,
            drain_duration: DEFAULT_DRAIN,
            identity: None,
            sds_socket: None,
        }
    }
}

/// The prefix of environment variables whose values become node metadata, as strings.
pub const ISTIO_META_PREFIX: &str = "ISTIO_META_";
/// The prefix of environment variables whose values, JSON, become node metadata.
pub const ISTIO_METAJSON_PREFIX: &str = "ISTIO_METAJSON_";

impl AgentConfig {
    /// Adds node metadata from environment variables the way pilot-agent does:
    /// `ISTIO_META_FOO=bar` sets `FOO: "bar"` (so `ISTIO_META_CLUSTER_ID` sets
    /// `CLUSTER_ID`), and `ISTIO_METAJSON_FOO={…}` sets `FOO` to the parsed JSON
    /// (`ISTIO_METAJSON_LABELS` adds labels). Variables whose JSON does not parse are
    /// skipped with a warning, as pilot-agent does. Typed fields that are set (a flag
    /// given on the command line) win over the environment when the bootstrap is built.
    pub fn apply_istio_meta_env<I, K, V>(&mut self, vars: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref());
            if let Some(key) = name.strip_prefix(ISTIO_METAJSON_PREFIX) {
                if key.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(value) {
                    Ok(Value::Object(labels)) if key == "LABELS" => {
                        for (k, v) in labels {
                            let v = match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            self.labels.entry(k).or_insert(v);
                        }
                    }
                    Ok(parsed) => {
                        self.extra_metadata.insert(key.to_string(), parsed);
                    }
                    Err(e) => {
                        tracing::warn!(variable = name, error = %e, "skipping an environment variable whose value is not JSON");
                    }
                }
            } else if let Some(key) = name.strip_prefix(ISTIO_META_PREFIX)
                && !key.is_empty()
            {
                self.extra_metadata
                    .insert(key.to_string(), Value::String(value.to_string()));
            }
        }
    }
}

/// This host's name up to the first dot (what a pod's hostname is: its name), for a
/// pod name when none is given; `isthmus-agent` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| h.trim().split('.').next().map(str::to_string))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "isthmus-agent".to_string())
}

/// Parses `k=v,k=v` (the `--labels` flag). An empty string gives no labels.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Error::Labels(s.to_string()))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::Labels(s.to_string()));
        }
        labels.insert(k.to_string(), v.trim().to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_addresses() {
        let a: DiscoveryAddress = "127.0.0.1:15010".parse().unwrap();
        assert_eq!(a.ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(a.port, 15010);
        let a: DiscoveryAddress = "istiod.istio-system.svc:15012".parse().unwrap();
        assert_eq!(a.host, "istiod.istio-system.svc");
        assert_eq!(a.ip(), None);
        let a: DiscoveryAddress = "[::1]:15010".parse().unwrap();
        assert_eq!(a.host, "::1");
        assert_eq!(a.to_string(), "[::1]:15010");
        for bad in [
            "istiod",
            "istiod:0",
            "istiod:x",
            ":15010",
            "a b:1",
            "[::1:15010",
        ] {
            assert!(
                bad.parse::<DiscoveryAddress>().is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn labels() {
        let l = parse_labels("app=reviews, version=v1,").unwrap();
        assert_eq!(l["app"], "reviews");
        assert_eq!(l["version"], "v1");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("app").is_err());
        assert!(parse_labels("=v").is_err());
    }

    #[test]
    fn istio_meta_env() {
        let mut c = AgentConfig {
            labels: [("app".to_string(), "reviews".to_string())].into(),
            ..AgentConfig::default()
        };
        c.apply_istio_meta_env([
            ("ISTIO_META_CLUSTER_ID", "cluster2"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("ISTIO_METAJSON_LABELS", r#"{"app":"other","version":"v2"}"#),
            ("ISTIO_METAJSON_ANNOTATIONS", r#"{"a":"b"}"#),
            ("ISTIO_METAJSON_BROKEN", "{"),
            ("PATH", "/bin"),
            ("ISTIO_META_", "x"),
        ]);
        assert_eq!(c.extra_metadata["CLUSTER_ID"], "cluster2");
        assert_eq!(c.extra_metadata["DNS_CAPTURE"], "true");
        assert_eq!(
            c.extra_metadata["ANNOTATIONS"],
            serde_json::json!({"a": "b"})
        );
        assert_eq!(c.extra_metadata.len(), 3);
        // Labels set explicitly win; the environment adds the others.
        assert_eq!(c.labels["app"], "reviews");
        assert_eq!(c.labels["version"], "v2");
    }
}
