//! Generated config as JSON, the way Envoy's admin `/config_dump` shows it: canonical
//! proto3 JSON (lowerCamelCase fields, `@type` inside every `Any`, nested `Any`s
//! expanded, default values left out).
//!
//! `envoy-types` has no JSON support, so messages are decoded by reflection against
//! the descriptor set it is generated from, vendored in `descriptors/` (see the README
//! there for how to refresh it when `envoy-types` is upgraded).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value, json};

use crate::resources::{self, ProxyResources, Resource};

/// Envoy's descriptors (and google.protobuf's well-known types), as shipped in the
/// source of `envoy-types` 0.7.7.
static DESCRIPTORS: &[u8] = include_bytes!("../descriptors/envoy-types-0.7.7.bin");

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()));

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the embedded Envoy descriptor set cannot be read: {0}")]
    Descriptors(String),
    #[error(
        "type URL {0:?} does not name a message (expected type.googleapis.com/PACKAGE.MESSAGE)"
    )]
    BadTypeUrl(String),
    #[error(
        "type {0:?} is not in the embedded Envoy descriptor set (is it from a newer Envoy than envoy-types 0.7.7?)"
    )]
    UnknownType(String),
    #[error("cannot decode {type_url}: {source}")]
    Decode {
        type_url: String,
        source: prost::DecodeError,
    },
    #[error("cannot convert {type_url} to JSON: {source}")]
    Json {
        type_url: String,
        source: serde_json::Error,
    },
}

/// The descriptor pool every dump decodes with.
pub fn pool() -> Result<&'static DescriptorPool, DumpError> {
    POOL.as_ref().map_err(|e| DumpError::Descriptors(e.clone()))
}

/// One resource as canonical proto3 JSON (lowerCamelCase field names), with its
/// `@type`.
pub fn resource_json(any: &Any) -> Result<Value, DumpError> {
    resource_json_with(any, false)
}

/// [`resource_json`], with the protos' own snake_case field names if `proto_names`
/// (what Envoy's admin `/config_dump` prints).
pub fn resource_json_with(any: &Any, proto_names: bool) -> Result<Value, DumpError> {
    let pool = pool()?;
    let name = any
        .type_url
        .rsplit_once('/')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DumpError::BadTypeUrl(any.type_url.clone()))?;
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| DumpError::UnknownType(any.type_url.clone()))?;
    let msg =
        DynamicMessage::decode(desc, any.value.as_slice()).map_err(|source| DumpError::Decode {
            type_url: any.type_url.clone(),
            source,
        })?;
    let options = SerializeOptions::new().use_proto_field_name(proto_names);
    let fields = msg
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| DumpError::Json {
            type_url: any.type_url.clone(),
            source,
        })?;
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(any.type_url.clone()));
    match fields {
        Value::Object(m) => out.extend(m),
        // Only well-known types serialize to something other than an object.
        other => {
            out.insert("value".into(), other);
        }
    }
    Ok(Value::Object(out))
}

/// What a dump shows.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    /// Include each resource's `versionInfo` (golden files leave it out: it changes
    /// with any edit to the resource's encoding).
    pub versions: bool,
    /// Only these sections, by short name (`cds`, `eds`, `lds`, `rds`); all if `None`.
    pub types: Option<BTreeSet<String>>,
    /// snake_case field names, as Envoy's admin `/config_dump` prints them, instead of
    /// canonical proto3 JSON's lowerCamelCase: for diffing with what Envoy holds.
    pub proto_names: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        Self {
            versions: true,
            types: None,
            proto_names: false,
        }
    }
}

/// Everything a proxy receives, shaped like Envoy's admin `/config_dump`.
pub fn config_dump(res: &ProxyResources) -> Value {
    config_dump_with(res, &DumpOptions::default())
}

/// A lowerCamelCase key, or its snake_case form.
fn key(camel: &str, proto_names: bool) -> String {
    if !proto_names {
        return camel.to_string();
    }
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`config_dump`] with options.
pub fn config_dump_with(res: &ProxyResources, opts: &DumpOptions) -> Value {
    // Envoy's order of these sections.
    let sections: [(&str, &str, &str); 4] = [
        (
            resources::CLUSTER,
            "ClustersConfigDump",
            "dynamicActiveClusters",
        ),
        (
            resources::ENDPOINT,
            "EndpointsConfigDump",
            "dynamicEndpointConfigs",
        ),
        (
            resources::LISTENER,
            "ListenersConfigDump",
            "dynamicListeners",
        ),
        (resources::ROUTE, "RoutesConfigDump", "dynamicRouteConfigs"),
    ];
    let wanted = |type_url: &str| {
        opts.types
            .as_ref()
            .is_none_or(|t| t.contains(resources::short(type_url)))
    };
    let mut configs = Vec::new();
    for (type_url, dump_type, list) in sections {
        let Some(by_name) = res.of(type_url) else {
            continue;
        };
        if !wanted(type_url) {
            continue;
        }
        let entries: Vec<Value> = by_name.values().map(|r| entry(type_url, r, opts)).collect();
        let mut section = Map::new();
        section.insert("@type".into(), Value::String(format!("{ADMIN}{dump_type}")));
        section.insert(key(list, opts.proto_names), Value::Array(entries));
        configs.push(Value::Object(section));
    }
    // Types Envoy's dump has no section for here: listed plainly, so nothing is hidden.
    for (type_url, by_name) in &res.by_type {
        if resources::TYPES.contains(&type_url.as_str()) || opts.types.is_some() {
            continue;
        }
        let entries: Vec<Value> = by_name
            .values()
            .map(|r| match resource_json_with(&r.any, opts.proto_names) {
                Ok(v) => with_version(json!({ "name": r.name, "resource": v }), r, opts),
                Err(e) => error_entry(r, &e),
            })
            .collect();
        configs.push(json!({ key("typeUrl", opts.proto_names): type_url, "resources": entries }));
    }
    json!({ "configs": configs })
}

fn error_entry(r: &Resource, e: &DumpError) -> Value {
    tracing::warn!(resource = %r.name, error = %e, "cannot show a generated resource as JSON");
    json!({ "name": r.name, "error": e.to_string() })
}

fn with_version(mut v: Value, r: &Resource, opts: &DumpOptions) -> Value {
    if opts.versions
        && let Value::Object(m) = &mut v
    {
        m.insert(
            key("versionInfo", opts.proto_names),
            Value::String(r.version.clone()),
        );
    }
    v
}

/// One resource in its section's shape.
fn entry(type_url: &str, r: &Resource, opts: &DumpOptions) -> Value {
    let body = match resource_json_with(&r.any, opts.proto_names) {
        Ok(v) => v,
        Err(e) => return error_entry(r, &e),
    };
    let k = |camel: &str| key(camel, opts.proto_names);
    match type_url {
        resources::CLUSTER => with_version(json!({ "cluster": body }), r, opts),
        resources::LISTENER => json!({
            "name": r.name,
            k("activeState"): with_version(json!({ "listener": body }), r, opts),
        }),
        resources::ROUTE => with_version(json!({ k("routeConfig"): body }), r, opts),
        _ => with_version(json!({ k("endpointConfig"): body }), r, opts),
    }
}

/// Readable YAML of a dump, for golden files and people.
pub fn to_yaml(value: &Value) -> String {
    // A JSON value always has a YAML form; JSON itself is YAML if that ever fails.
    serde_yaml_ng::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
        http_filter,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    use envoy_types::pb::google::protobuf::Duration;
    use prost::{Message, Name};

    use super::*;

    fn any<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn cluster() -> Cluster {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            typed_extension_protocol_options: HashMap::from([(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
                any(&opts),
            )]),
            ..Default::default()
        }
    }

    fn listener() -> Listener {
        let hcm = HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_9080".into(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "9080".into(),
                ..Default::default()
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(
                    any(&Router::default()),
                )),
                ..Default::default()
            }],
            ..Default::default()
        };
        Listener {
            name: "0.0.0.0_9080".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn dump_cluster_expands_typed_extension_options() {
        let v = resource_json(&any(&cluster())).unwrap();
        assert_eq!(
            v["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(
            v["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(v["connectTimeout"], "10s");
        let opts = &v["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            opts["@type"],
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        assert_eq!(
            opts["explicitHttpConfig"]["http2ProtocolOptions"],
            json!({})
        );
        // Defaults are left out.
        assert!(v.get("lbPolicy").is_none(), "{v}");
    }

    #[test]
    fn dump_listener_expands_nested_anys() {
        let v = resource_json(&any(&listener())).unwrap();
        let hcm = &v["filterChains"][0]["filters"][0]["typedConfig"];
        assert_eq!(
            hcm["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        assert_eq!(hcm["statPrefix"], "outbound_0.0.0.0_9080");
        assert_eq!(hcm["rds"]["routeConfigName"], "9080");
        assert_eq!(
            hcm["httpFilters"][0]["typedConfig"],
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"})
        );
    }

    fn resources_of(list: &[(&str, &str, Any)]) -> ProxyResources {
        let mut res = ProxyResources::default();
        for (type_url, name, any) in list {
            res.add(
                type_url,
                Resource {
                    name: name.to_string(),
                    any: std::sync::Arc::new(any.clone()),
                    version: "v1".into(),
                },
            );
        }
        res
    }

    #[test]
    fn dump_is_shaped_like_envoys_config_dump() {
        let res = resources_of(&[
            (resources::CLUSTER, "c", any(&cluster())),
            (resources::LISTENER, "0.0.0.0_9080", any(&listener())),
        ]);
        let v = config_dump(&res);
        let configs = v["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[0]["@type"], format!("{ADMIN}ClustersConfigDump"));
        assert_eq!(configs[0]["dynamicActiveClusters"][0]["versionInfo"], "v1");
        assert_eq!(
            configs[0]["dynamicActiveClusters"][0]["cluster"]["connectTimeout"],
            "10s"
        );
        assert_eq!(configs[1]["@type"], format!("{ADMIN}ListenersConfigDump"));
        let l = &configs[1]["dynamicListeners"][0];
        assert_eq!(l["name"], "0.0.0.0_9080");
        assert_eq!(l["activeState"]["versionInfo"], "v1");
        assert_eq!(l["activeState"]["listener"]["name"], "0.0.0.0_9080");

        // Envoy's own ConfigDump message reads it back: the field names are Envoy's.
        let desc = pool()
            .unwrap()
            .get_message_by_name("envoy.admin.v3.ConfigDump")
            .unwrap();
        DynamicMessage::deserialize(desc.clone(), v).unwrap();

        // Envoy's admin spelling, for diffing with what Envoy holds.
        let snake = config_dump_with(
            &res,
            &DumpOptions {
                proto_names: true,
                ..Default::default()
            },
        );
        let c = &snake["configs"][0]["dynamic_active_clusters"][0];
        assert_eq!(c["version_info"], "v1");
        assert_eq!(c["cluster"]["connect_timeout"], "10s");
        let l = &snake["configs"][1]["dynamic_listeners"][0]["active_state"];
        assert_eq!(
            l["listener"]["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"],
            "outbound_0.0.0.0_9080"
        );
        DynamicMessage::deserialize(desc.clone(), snake).unwrap();

        let only = config_dump_with(
            &res,
            &DumpOptions {
                versions: false,
                types: Some(BTreeSet::from(["lds".to_string()])),
                ..Default::default()
            },
        );
        let configs = only["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 1);
        assert!(
            configs[0]["dynamicListeners"][0]["activeState"]
                .get("versionInfo")
                .is_none()
        );
    }

    #[test]
    fn dump_unknown_type_is_an_error_entry() {
        let unknown = Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v9.Cluster".into(),
            value: vec![],
        };
        assert!(matches!(
            resource_json(&unknown),
            Err(DumpError::UnknownType(_))
        ));
        // A nested unknown Any fails its resource too.
        let mut c = cluster();
        c.typed_extension_protocol_options
            .insert("x".into(), unknown.clone());
        assert!(resource_json(&any(&c)).is_err());

        let res = resources_of(&[
            (resources::CLUSTER, "bad", unknown),
            (resources::CLUSTER, "good", any(&cluster())),
        ]);
        let v = config_dump(&res);
        let list = &v["configs"][0]["dynamicActiveClusters"];
        assert_eq!(list[0]["name"], "bad");
        assert!(
            list[0]["error"].as_str().unwrap().contains("v9.Cluster"),
            "{v}"
        );
        assert_eq!(list[1]["cluster"]["@type"], resources::CLUSTER);
    }

    #[test]
    fn dump_yaml_is_readable() {
        let y = to_yaml(&json!({"configs": [{"@type": "t", "a": [1, "x"]}]}));
        assert_eq!(y, "configs:\n- '@type': t\n  a:\n  - 1\n  - x\n");
    }

    #[test]
    fn dump_pool_has_every_type_generation_uses() {
        let pool = pool().unwrap();
        let names = [
            "google.protobuf.Any",
            "google.protobuf.Duration",
            "google.protobuf.Struct",
            "google.protobuf.Value",
            "google.protobuf.UInt32Value",
            "google.protobuf.BoolValue",
            "envoy.config.cluster.v3.Cluster",
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            "envoy.config.listener.v3.Listener",
            "envoy.config.route.v3.RouteConfiguration",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.filters.http.fault.v3.HTTPFault",
            "envoy.extensions.filters.http.cors.v3.Cors",
            "envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
            "envoy.admin.v3.ConfigDump",
            "envoy.admin.v3.ClustersConfigDump",
            "envoy.admin.v3.ListenersConfigDump",
            "envoy.admin.v3.RoutesConfigDump",
            "envoy.admin.v3.EndpointsConfigDump",
        ];
        let missing: Vec<&str> = names
            .into_iter()
            .filter(|n| pool.get_message_by_name(n).is_none())
            .collect();
        assert!(missing.is_empty(), "not in the descriptor set: {missing:?}");
        // Every type URL resolves as resource_json resolves it (an empty Any has no
        // type URL of its own to expand, so it is left out).
        for n in names.into_iter().filter(|n| *n != "google.protobuf.Any") {
            let empty = Any {
                type_url: format!("type.googleapis.com/{n}"),
                value: vec![],
            };
            resource_json(&empty).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }
}
