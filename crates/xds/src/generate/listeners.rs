//! Listener building blocks: the HTTP connection manager (RDS or an inline route
//! table), the TCP proxy (one cluster or weighted), capture listeners with original
//! destination, TLS inspection and TLS termination.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TrafficDirection, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier, UpgradeConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;

use super::clusters::{ads, socket_address};

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// Where an HTTP connection manager gets its routes.
pub enum Routes {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// Istio's HTTP filter chain: fault injection, CORS, then the router.
fn http_filters() -> Vec<HttpFilter> {
    vec![
        HttpFilter {
            name: "envoy.filters.http.fault".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                HttpFault::default(),
            ))),
            ..Default::default()
        },
        HttpFilter {
            name: "envoy.filters.http.cors".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Cors::default(),
            ))),
            ..Default::default()
        },
        HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        },
    ]
}

/// An HTTP connection manager filter. Gateways use the client's address and strip the
/// port from Host before matching virtual hosts, as Istio's gateways do.
pub fn http_connection_manager(stat_prefix: &str, routes: Routes, gateway: bool) -> Filter {
    hcm_filter(hcm(stat_prefix, routes, gateway))
}

/// The inbound connection manager of a sidecar: as [`http_connection_manager`], and the
/// peer's identity (of a mesh mTLS connection) passed to the app in
/// `x-forwarded-client-cert` (`By`, `Hash`, `Subject`, `URI`, `DNS`), as Istio sets it:
/// `APPEND_FORWARD` with subject, URI and DNS.
pub fn inbound_http_connection_manager(stat_prefix: &str, routes: Routes) -> Filter {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
        ForwardClientCertDetails, SetCurrentClientCertDetails,
    };
    let mut h = hcm(stat_prefix, routes, false);
    h.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    h.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        uri: true,
        dns: true,
        ..Default::default()
    });
    hcm_filter(h)
}

fn hcm_filter(hcm: HttpConnectionManager) -> Filter {
    Filter {
        name: HCM.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}

fn hcm(stat_prefix: &str, routes: Routes, gateway: bool) -> HttpConnectionManager {
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        Routes::Inline(rc) => RouteSpecifier::RouteConfig(*rc),
    };
    let mut hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: http_filters(),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        use_remote_address: Some(BoolValue { value: gateway }),
        normalize_path: Some(BoolValue { value: true }),
        ..Default::default()
    };
    if gateway {
        hcm.strip_port_mode = Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true),
        );
    }
    hcm
}

/// A TCP proxy to one cluster, or to several by weight.
pub fn tcp_proxy(stat_prefix: &str, clusters: &[(String, u32)]) -> Filter {
    let specifier = match clusters {
        [(one, _)] => ClusterSpecifier::Cluster(one.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
    }
}

pub fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A filter chain with these filters, matched as given.
pub fn chain(name: &str, m: Option<FilterChainMatch>, filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match: m,
        filters,
        ..Default::default()
    }
}

pub fn match_port(port: u16) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        ..Default::default()
    }
}

pub fn match_sni(names: Vec<String>) -> FilterChainMatch {
    FilterChainMatch {
        server_names: names,
        ..Default::default()
    }
}

/// A listener on `ip:port`. Listeners that only receive connections handed over by a
/// capture listener don't bind (`bind_to_port: false`).
pub fn listener(
    name: &str,
    ip: &str,
    port: u16,
    bind: bool,
    direction: TrafficDirection,
    chains: Vec<FilterChain>,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(ip, port)),
        filter_chains: chains,
        bind_to_port: (!bind).then_some(BoolValue { value: false }),
        traffic_direction: direction as i32,
        ..Default::default()
    }
}

/// A capture listener: takes connections redirected by iptables and restores their
/// original destination. Outbound, each is handed to the listener of that destination
/// (`use_original_dst`); inbound, its own filter chains choose by destination port
/// (handing inbound connections to the outbound `0.0.0.0_PORT` listeners would loop).
pub fn capture_listener(name: &str, port: u16, direction: TrafficDirection) -> Listener {
    Listener {
        use_original_dst: (direction == TrafficDirection::Outbound)
            .then_some(BoolValue { value: true }),
        listener_filters: vec![original_dst()],
        ..listener(name, "0.0.0.0", port, true, direction, Vec::new())
    }
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// Certificate material for a TLS server: inline (from a Secret) or files.
pub enum CertSource {
    Inline {
        cert: Vec<u8>,
        key: Vec<u8>,
        ca: Option<Vec<u8>>,
    },
    Files {
        cert: String,
        key: String,
        ca: Option<String>,
    },
}

/// TLS termination for a gateway server; `require_client` for MUTUAL.
pub fn downstream_tls(source: CertSource, require_client: bool, alpn: &[&str]) -> TransportSocket {
    let (cert, key, ca) = match source {
        CertSource::Inline { cert, key, ca } => (inline(cert), inline(key), ca.and_then(inline)),
        CertSource::Files { cert, key, ca } => {
            (file(&cert), file(&key), ca.as_deref().and_then(file))
        }
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: cert,
                private_key: key,
                ..Default::default()
            }],
            alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            validation_context_type: ca.map(|ca| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(ca),
                    ..Default::default()
                })
            }),
            ..Default::default()
        }),
        require_client_certificate: require_client.then_some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}
