//! Envoy's bootstrap: the node's identity and metadata, ADS to the control plane, and
//! the admin interface. A pure function of [`AgentConfig`]; Envoy reads it as JSON with
//! `--config-path`.

use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use crate::{AgentConfig, Error};

/// The name of the static cluster that reaches the control plane.
pub const XDS_CLUSTER: &str = "xds-grpc";
/// The file the bootstrap is written to, in the config directory (Istio's name).
pub const BOOTSTRAP_FILE: &str = "envoy-rev.json";

/// Circuit breaker limits on the xDS cluster: high enough never to trip (Istio's values).
const XDS_CIRCUIT_BREAKER_LIMIT: u32 = 100_000;

/// The node id: `sidecar~IP~POD.NS~NS.svc.DOMAIN` (gateways: `router~…`).
pub fn node_id(config: &AgentConfig) -> String {
    format!(
        "{}~{}~{}.{}~{}.svc.{}",
        config.kind,
        config.node_ip,
        config.pod_name,
        config.namespace,
        config.namespace,
        config.domain_suffix
    )
}

/// `node.cluster`, the proxy's service cluster: `APP.NAMESPACE`, where APP is the
/// workload's canonical name as Istio finds it (label `service.istio.io/canonical-name`,
/// else `app.kubernetes.io/name`, else `app`), falling back to the pod name. This is
/// Istio's `APP_LABEL_AND_NAMESPACE` service-cluster naming; its older default, the
/// constant `istio-proxy`, says nothing about the workload.
pub fn service_cluster(config: &AgentConfig) -> String {
    let labels = &config.labels;
    let app = [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
    .unwrap_or(&config.pod_name);
    format!("{app}.{}", config.namespace)
}

/// `node.metadata`: `INTERCEPTION_MODE` (default `REDIRECT`), then the extra metadata
/// (`ISTIO_META_*`), then every typed field that is set: CLUSTER_ID, NETWORK, MESH_ID,
/// NAMESPACE, SERVICE_ACCOUNT, NAME, LABELS and REQUESTED_NETWORK_VIEW.
pub fn node_metadata(config: &AgentConfig) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("INTERCEPTION_MODE".into(), "REDIRECT".into());
    for (k, v) in &config.extra_metadata {
        meta.insert(k.clone(), v.clone());
    }
    let mut set = |key: &str, value: &str| {
        if !value.is_empty() {
            meta.insert(key.to_string(), Value::String(value.to_string()));
        }
    };
    set("CLUSTER_ID", &config.cluster_id);
    set("NETWORK", &config.network);
    set("MESH_ID", &config.mesh_id);
    set("NAMESPACE", &config.namespace);
    set("SERVICE_ACCOUNT", &config.service_account);
    set("NAME", &config.pod_name);
    set(
        "REQUESTED_NETWORK_VIEW",
        &config.requested_network_view.join(","),
    );
    // The agent serves the workload certificate over SDS: the control plane may give
    // this proxy mesh mTLS.
    if config.identity.is_some() {
        meta.insert("SDS".into(), Value::String("true".into()));
    }
    // Labels from ISTIO_METAJSON_LABELS were merged into config.labels already; an
    // ISTIO_META_LABELS that is an object is merged here.
    let labels = &config.labels;
    if !labels.is_empty() {
        let mut merged = match meta.remove("LABELS") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in labels {
            merged.insert(k.clone(), Value::String(v.clone()));
        }
        meta.insert("LABELS".into(), Value::Object(merged));
    }
    meta
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

/// Checks what the bootstrap needs; the errors say which flag or variable to set.
pub fn validate(config: &AgentConfig) -> Result<(), Error> {
    let bad = |what: String| Err(Error::Config(what));
    if config.pod_name.is_empty() {
        return bad("the pod name is empty: pass --pod-name or set POD_NAME".into());
    }
    if config.namespace.is_empty() {
        return bad("the namespace is empty: pass --namespace or set POD_NAMESPACE".into());
    }
    if config.domain_suffix.is_empty() {
        return bad("the domain suffix is empty".into());
    }
    for (what, value) in [
        ("pod name", &config.pod_name),
        ("namespace", &config.namespace),
    ] {
        if value.contains('~') || value.contains('.') {
            return bad(format!(
                "the {what} {value:?} may not contain '~' or '.' (it is part of the node id)"
            ));
        }
    }
    if !config.admin_address.ip().is_loopback() {
        return bad(format!(
            "the admin address {} is not a loopback address: Envoy's admin interface must not be reachable from outside the pod (use 127.0.0.1:PORT)",
            config.admin_address
        ));
    }
    Ok(())
}

fn admin(address: SocketAddr) -> Value {
    json!({ "address": socket_address(&address.ip().to_string(), address.port()) })
}

/// The `xds-grpc` cluster: HTTP/2 with keepalive to the control plane; STATIC for an IP
/// address, STRICT_DNS (IPv4) for a DNS name.
fn xds_cluster(config: &AgentConfig) -> Value {
    let discovery = &config.discovery_address;
    let thresholds: Vec<Value> = ["DEFAULT", "HIGH"]
        .iter()
        .map(|priority| {
            json!({
                "priority": priority,
                "max_connections": XDS_CIRCUIT_BREAKER_LIMIT,
                "max_pending_requests": XDS_CIRCUIT_BREAKER_LIMIT,
                "max_requests": XDS_CIRCUIT_BREAKER_LIMIT,
                "max_retries": XDS_CIRCUIT_BREAKER_LIMIT,
            })
        })
        .collect();
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if discovery.ip().is_some() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address(&discovery.host, discovery.port) }
                }]
            }]
        },
        "circuit_breakers": { "thresholds": thresholds },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": { "interval": "30s", "timeout": "10s" }
                    }
                }
            }
        },
        "upstream_connection_options": {
            "tcp_keepalive": { "keepalive_time": 300 }
        }
    });
    if discovery.ip().is_none() {
        cluster["dns_lookup_family"] = "V4_ONLY".into();
    }
    if let Some(identity) = &config.identity {
        // xDS over TLS (15012): the control plane's certificate must chain to the mesh's
        // root and carry its name. Envoy presents no certificate of its own here.
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": identity.ca_server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": { "filename": identity.root_cert },
                        "match_typed_subject_alt_names": [{
                            "san_type": "DNS",
                            "matcher": { "exact": identity.ca_server_name },
                        }],
                    },
                },
            },
        });
    }
    cluster
}

/// The `sds-grpc` cluster: the agent's SDS server on a Unix socket (Istio's name).
fn sds_cluster(socket: &std::path::Path) -> Value {
    json!({
        "name": crate::sds::SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": crate::sds::SDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": { "pipe": { "path": socket } } }
                }]
            }]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        }
    })
}

/// The whole bootstrap, as Envoy's JSON.
pub fn bootstrap(config: &AgentConfig) -> Result<Value, Error> {
    validate(config)?;
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut clusters = vec![xds_cluster(config)];
    if config.identity.is_some() {
        let socket = config
            .sds_socket
            .as_deref()
            .ok_or_else(|| Error::Config("a workload identity needs an SDS socket path".into()))?;
        clusters.push(sds_cluster(socket));
    }
    Ok(json!({
        "node": {
            "id": node_id(config),
            "cluster": service_cluster(config),
            "metadata": node_metadata(config),
        },
        "admin": admin(config.admin_address),
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": clusters,
        },
        // As Istio does: an explicit (unlimited) downstream connection limit, which
        // also keeps Envoy from warning at every start that there is none.
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": i32::MAX,
                },
            }],
        },
    }))
}

/// The bootstrap as pretty JSON text, ending with a newline.
pub fn bootstrap_json(config: &AgentConfig) -> Result<String, Error> {
    let mut text = serde_json::to_string_pretty(&bootstrap(config)?)
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    use super::*;
    use crate::ProxyKind;

    /// The sidecar of the golden file: every field set.
    pub(crate) fn sidecar() -> AgentConfig {
        let mut c = AgentConfig {
            kind: ProxyKind::Sidecar,
            node_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
            pod_name: "reviews-v1-5b8d7c9f4-x2k8p".into(),
            namespace: "bookinfo".into(),
            cluster_id: "cluster1".into(),
            network: "network1".into(),
            mesh_id: "mesh1".into(),
            service_account: "bookinfo-reviews".into(),
            labels: [("app", "reviews"), ("version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AgentConfig::default()
        };
        c.apply_istio_meta_env([("ISTIO_META_DNS_CAPTURE", "true")]);
        c
    }

    /// The east-west gateway of the golden file, with a DNS name for the control plane.
    pub(crate) fn router() -> AgentConfig {
        AgentConfig {
            kind: ProxyKind::Router,
            node_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)),
            pod_name: "istio-eastwestgateway-7f9c6d5b8-q4w5e".into(),
            namespace: "istio-system".into(),
            cluster_id: "cluster2".into(),
            network: "network2".into(),
            mesh_id: "mesh1".into(),
            service_account: "istio-eastwestgateway-service-account".into(),
            labels: [
                ("app", "istio-eastwestgateway"),
                ("istio", "eastwestgateway"),
                ("topology.istio.io/network", "network2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            requested_network_view: vec!["network2".into(), "network3".into()],
            discovery_address: "istiod.istio-system.svc:15010".parse().unwrap(),
            admin_address: "127.0.0.1:15100".parse().unwrap(),
            ..AgentConfig::default()
        }
    }

    fn check_golden(name: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        similar_asserts::assert_eq!(
            expected,
            actual,
            "{} differs; if the change is intended, run `UPDATE_GOLDEN=1 cargo test -p isthmus-agent` and review the diff",
            path.display()
        );
    }

    #[test]
    fn golden_sidecar_bootstrap() {
        check_golden(
            "bootstrap_sidecar.json",
            &bootstrap_json(&sidecar()).unwrap(),
        );
    }

    #[test]
    fn golden_router_bootstrap() {
        check_golden("bootstrap_router.json", &bootstrap_json(&router()).unwrap());
    }

    #[test]
    fn node_ids() {
        assert_eq!(
            node_id(&sidecar()),
            "sidecar~198.18.0.10~reviews-v1-5b8d7c9f4-x2k8p.bookinfo~bookinfo.svc.cluster.local"
        );
        let mut r = router();
        r.domain_suffix = "example.org".into();
        assert_eq!(
            node_id(&r),
            "router~198.18.0.20~istio-eastwestgateway-7f9c6d5b8-q4w5e.istio-system~istio-system.svc.example.org"
        );
    }

    #[test]
    fn service_cluster_prefers_the_canonical_name() {
        let mut c = sidecar();
        assert_eq!(service_cluster(&c), "reviews.bookinfo");
        c.labels.insert(
            "service.istio.io/canonical-name".into(),
            "reviews-canon".into(),
        );
        assert_eq!(service_cluster(&c), "reviews-canon.bookinfo");
        c.labels.clear();
        assert_eq!(service_cluster(&c), "reviews-v1-5b8d7c9f4-x2k8p.bookinfo");
    }

    #[test]
    fn typed_fields_win_over_the_environment_and_fill_gaps() {
        let mut c = sidecar();
        c.cluster_id.clear();
        c.apply_istio_meta_env([
            ("ISTIO_META_CLUSTER_ID", "from-env"),
            ("ISTIO_META_NETWORK", "other-network"),
            ("ISTIO_META_INTERCEPTION_MODE", "TPROXY"),
            ("ISTIO_META_REQUESTED_NETWORK_VIEW", "a,b"),
        ]);
        let meta = node_metadata(&c);
        assert_eq!(meta["CLUSTER_ID"], "from-env");
        assert_eq!(meta["NETWORK"], "network1");
        assert_eq!(meta["INTERCEPTION_MODE"], "TPROXY");
        assert_eq!(meta["REQUESTED_NETWORK_VIEW"], "a,b");
        assert_eq!(meta["LABELS"], json!({"app": "reviews", "version": "v1"}));
    }

    #[test]
    fn empty_fields_are_left_out() {
        let c = AgentConfig {
            pod_name: "p".into(),
            ..AgentConfig::default()
        };
        let meta = node_metadata(&c);
        let keys: Vec<&str> = meta.keys().map(String::as_str).collect();
        assert_eq!(keys, ["INTERCEPTION_MODE", "NAME", "NAMESPACE"]);
    }

    #[test]
    fn invalid_configs_say_what_to_set() {
        let e = bootstrap(&AgentConfig::default()).unwrap_err().to_string();
        assert!(e.contains("--pod-name"), "{e}");
        let mut c = sidecar();
        c.admin_address = "0.0.0.0:15000".parse().unwrap();
        let e = bootstrap(&c).unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
    }
}
