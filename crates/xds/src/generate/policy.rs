//! DestinationRule traffic policy → Envoy cluster settings (Istio's semantics).
//!
//! What Istio's `applyTrafficPolicy` does to an outbound cluster, for the parts of a
//! `TrafficPolicy` Isthmus serves so far: load balancer, connection pool (circuit
//! breakers, timeouts, keepalive, upstream HTTP protocol), outlier detection and client
//! TLS (`SIMPLE` and `MUTUAL` from files). The HTTP options Envoy v3 reads from
//! `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
//! are built as one `HttpProtocolOptions` and packed there at the end, as Istio does.
//!
//! Mesh mTLS (`ISTIO_MUTUAL`, auto mTLS) is `mtls.rs`'s, applied in `clusters.rs`. Not here yet: `credentialName`
//! (Secrets are not served over SDS yet), locality load balancing (it needs the proxy's
//! locality and rewrites the load assignment), `tunnel`, `proxyProtocol` and
//! `retryBudget`.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig,
    RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Http1ProtocolOptions, Http2ProtocolOptions, RoutingPriority, RuntimeDouble,
    TcpKeepalive as EnvoyTcpKeepalive, TransportSocket,
};
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, CookieAttribute, Header, PolicySpecifier, QueryParameter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value, UInt64Value};
use isthmus_model::Protocol;
use isthmus_model::istio::DestinationRule;
use isthmus_model::istio::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConsistentHashLb, H2UpgradePolicy, HttpSettings,
    LoadBalancerSettings, OutlierDetection, PortTrafficPolicy, SimpleLb, TcpSettings,
    TrafficPolicy,
};
use isthmus_model::istio::validate::parse_duration;
use prost::{Message, Name};

/// The key of the upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// The name of Envoy's TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// The CA bundle client TLS trusts when a DestinationRule names no `caCertificates`:
/// Istio then verifies against the system's roots, which Envoy can only read from a
/// file; this is where Debian and Ubuntu (and Envoy's own images) keep them.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The service port a cluster is for.
#[derive(Clone, Copy, Debug)]
pub struct PortInfo {
    pub port: u16,
    pub protocol: Protocol,
}

/// The traffic policy in effect for one subset (or none) and port of a
/// DestinationRule: top level, then its portLevelSettings for the port, then the
/// subset's policy, then the subset's portLevelSettings; `port_level_settings` of the
/// result is empty.
///
/// As in Istio (`MergeSubsetTrafficPolicy`), a portLevelSettings entry for the port
/// *replaces* the policy it belongs to: its four groups (loadBalancer, connectionPool,
/// outlierDetection, tls) are taken as they are, and a group it leaves out falls back to
/// Istio's defaults, not to the level above. The subset's policy then overrides the
/// DestinationRule's group by group (a group the subset leaves out is inherited), except
/// when the subset has an entry for the port, which replaces all four groups. `tunnel`,
/// `proxyProtocol` and `retryBudget` are not port-level settings: a port-level entry
/// drops them, as in Istio, and a subset that sets one overrides it.
/// `None` when neither the rule nor the subset has a policy.
pub fn effective_policy(
    dr: &DestinationRule,
    subset: Option<&str>,
    port: u16,
) -> Option<TrafficPolicy> {
    let top = dr.traffic_policy.as_ref().map(|p| for_port(p, port).0);
    let subset_policy = subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    let Some(subset_policy) = subset_policy else {
        return top;
    };
    let (sub, port_level) = for_port(subset_policy, port);
    let Some(mut merged) = top else {
        return Some(sub);
    };
    if port_level || sub.load_balancer.is_some() {
        merged.load_balancer = sub.load_balancer;
    }
    if port_level || sub.connection_pool.is_some() {
        merged.connection_pool = sub.connection_pool;
    }
    if port_level || sub.outlier_detection.is_some() {
        merged.outlier_detection = sub.outlier_detection;
    }
    if port_level || sub.tls.is_some() {
        merged.tls = sub.tls;
    }
    if sub.tunnel.is_some() {
        merged.tunnel = sub.tunnel;
    }
    if sub.proxy_protocol.is_some() {
        merged.proxy_protocol = sub.proxy_protocol;
    }
    if sub.retry_budget.is_some() {
        merged.retry_budget = sub.retry_budget;
    }
    Some(merged)
}

/// The policy for `port` of one level (DestinationRule or subset): its first
/// portLevelSettings entry for the port, if any (then `true`), else the policy itself.
/// Either way without portLevelSettings.
fn for_port(policy: &TrafficPolicy, port: u16) -> (TrafficPolicy, bool) {
    let entry = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
    match entry {
        Some(PortTrafficPolicy {
            port: _,
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
        }) => (
            TrafficPolicy {
                load_balancer: load_balancer.clone(),
                connection_pool: connection_pool.clone(),
                outlier_detection: outlier_detection.clone(),
                tls: tls.clone(),
                ..Default::default()
            },
            true,
        ),
        None => (
            TrafficPolicy {
                load_balancer: policy.load_balancer.clone(),
                connection_pool: policy.connection_pool.clone(),
                outlier_detection: policy.outlier_detection.clone(),
                tls: policy.tls.clone(),
                port_level_settings: Vec::new(),
                tunnel: policy.tunnel.clone(),
                proxy_protocol: policy.proxy_protocol.clone(),
                retry_budget: policy.retry_budget.clone(),
            },
            false,
        ),
    }
}

/// Applies a traffic policy (or Istio's defaults when `None`) to an outbound cluster
/// for `host` and `port`: load balancer, connection pool, outlier detection, TLS,
/// upstream HTTP protocol options.
///
/// Without a policy a cluster gets Istio's defaults: circuit breakers at their maximum
/// (with `track_remaining`), an empty `common_lb_config`, `LEAST_REQUEST`, and explicit
/// HTTP/2 upstream for HTTP2 and GRPC ports (HTTP ports keep Envoy's HTTP/1.1).
///
/// Client TLS:
/// - `DISABLE` (or no `tls`): no transport socket.
/// - `SIMPLE`: Envoy's TLS transport socket. SNI is `tls.sni`, else `host` (and, as in
///   Istio, HTTP requests then send the Host they carry: `auto_sni`, with
///   `auto_san_validation` when no `subjectAltNames` are given). The server certificate
///   is verified against `caCertificates` (a file on the proxy), else the system roots
///   ([`SYSTEM_CA_BUNDLE`]), and `subjectAltNames`; `caCrl` is a CRL file;
///   `insecureSkipVerify` turns verification off.
/// - `MUTUAL`: as `SIMPLE`, plus the `clientCertificate` and `privateKey` files.
/// - `credentialName`: Kubernetes Secrets are not served to proxies (SDS) yet, so the
///   rule is treated as `SIMPLE` with no files (system roots, no client certificate) and
///   a warning is logged.
/// - `ISTIO_MUTUAL`: not supported yet (mesh mTLS comes with its own issue): the cluster
///   is left without TLS.
pub fn apply(cluster: &mut Cluster, policy: Option<&TrafficPolicy>, port: PortInfo, host: &str) {
    let none = TrafficPolicy::default();
    let policy = policy.unwrap_or(&none);
    let pool = policy.connection_pool.as_ref();
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());

    cluster.common_lb_config.get_or_insert_default();
    let mut options = None;
    // HTTP/2 ports speak HTTP/2 upstream; HTTP ports may be upgraded by the policy.
    if matches!(port.protocol, Protocol::Http2 | Protocol::Grpc) || h2_upgrade(http, port.protocol)
    {
        set_http2(&mut options);
    }
    apply_connection_pool(cluster, &mut options, tcp, http);
    apply_outlier_detection(cluster, policy.outlier_detection.as_ref());
    apply_load_balancer(cluster, policy.load_balancer.as_ref());
    if let Some(tls) = &policy.tls {
        apply_tls(cluster, &mut options, tls, host);
    }
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    }
    if let Some(mut options) = options {
        // Envoy requires an upstream protocol; HTTP/1.1 is what it would use anyway.
        options.upstream_protocol_options.get_or_insert(
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            }),
        );
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(&options));
    }
}

/// Route hash policies for a consistentHash load balancer.
///
/// One policy for the hash key the rule names (`httpHeaderName`, `httpCookie`,
/// `useSourceIp` or `httpQueryParameterName`); none for other load balancers. Takes the
/// effective policy for the route's destination (see [`effective_policy`]).
pub fn hash_policies(policy: Option<&TrafficPolicy>) -> Vec<HashPolicy> {
    let Some(hash) = policy
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.consistent_hash.as_ref())
    else {
        return Vec::new();
    };
    hash_key(hash)
        .map(|spec| HashPolicy {
            terminal: false,
            policy_specifier: Some(spec),
        })
        .into_iter()
        .collect()
}

fn hash_key(hash: &ConsistentHashLb) -> Option<PolicySpecifier> {
    if let Some(name) = hash.http_header_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(PolicySpecifier::Header(Header {
            header_name: name.clone(),
            regex_rewrite: None,
        }));
    }
    if let Some(cookie) = &hash.http_cookie {
        return Some(PolicySpecifier::Cookie(Cookie {
            name: cookie.name.clone(),
            ttl: cookie
                .ttl
                .as_deref()
                .and_then(|t| duration("loadBalancer.consistentHash.httpCookie.ttl", t)),
            path: cookie.path.clone().unwrap_or_default(),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        }));
    }
    if hash.use_source_ip == Some(true) {
        return Some(PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip: true },
        ));
    }
    if let Some(name) = hash
        .http_query_parameter_name
        .as_ref()
        .filter(|n| !n.is_empty())
    {
        return Some(PolicySpecifier::QueryParameter(QueryParameter {
            name: name.clone(),
        }));
    }
    None
}

// ---------------------------------------------------------------------------
// Connection pool and upstream protocol

/// Istio's `shouldH2Upgrade` with the mesh default (`DO_NOT_UPGRADE`): an HTTP port is
/// upgraded when its policy says `UPGRADE` and does not ask for the client's protocol.
fn h2_upgrade(http: Option<&HttpSettings>, protocol: Protocol) -> bool {
    http.is_some_and(|h| {
        h.use_client_protocol != Some(true)
            && h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && protocol.is_http()
    })
}

fn set_http2(options: &mut Option<HttpProtocolOptions>) {
    options.get_or_insert_default().upstream_protocol_options = Some(
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        }),
    );
}

/// The explicit HTTP/2 options, when the cluster speaks HTTP/2 upstream.
fn http2_options(options: &mut Option<HttpProtocolOptions>) -> Option<&mut Http2ProtocolOptions> {
    match options.as_mut()?.upstream_protocol_options.as_mut()? {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
        }) => Some(h2),
        _ => None,
    }
}

/// Istio's circuit breaker thresholds: everything unlimited, so that Envoy's own
/// defaults (1024 connections, 3 retries…) never throttle a mesh that did not ask.
fn default_thresholds() -> Thresholds {
    Thresholds {
        priority: RoutingPriority::Default as i32,
        max_connections: Some(u32_value(u32::MAX)),
        max_pending_requests: Some(u32_value(u32::MAX)),
        max_requests: Some(u32_value(u32::MAX)),
        max_retries: Some(u32_value(u32::MAX)),
        track_remaining: true,
        ..Default::default()
    }
}

fn apply_connection_pool(
    cluster: &mut Cluster,
    options: &mut Option<HttpProtocolOptions>,
    tcp: Option<&TcpSettings>,
    http: Option<&HttpSettings>,
) {
    let mut thresholds = default_thresholds();
    let mut idle_timeout = None;
    let mut max_requests_per_connection = None;
    let mut max_concurrent_streams = None;
    let mut max_connection_duration = None;

    if let Some(h) = http {
        // Envoy applies max_requests to HTTP/2 and max_pending_requests to HTTP/1.1.
        if let Some(n) = positive(h.http2_max_requests) {
            thresholds.max_requests = Some(u32_value(n));
        }
        if let Some(n) = positive(h.http1_max_pending_requests) {
            thresholds.max_pending_requests = Some(u32_value(n));
        }
        if let Some(n) = positive(h.max_retries) {
            thresholds.max_retries = Some(u32_value(n));
        }
        idle_timeout = h
            .idle_timeout
            .as_deref()
            .and_then(|d| duration("connectionPool.http.idleTimeout", d));
        max_requests_per_connection = positive(h.max_requests_per_connection);
        max_concurrent_streams = positive(h.max_concurrent_streams);
    }
    if let Some(t) = tcp {
        if let Some(d) = t
            .connect_timeout
            .as_deref()
            .and_then(|d| duration("connectionPool.tcp.connectTimeout", d))
        {
            cluster.connect_timeout = Some(d);
        }
        if let Some(n) = positive(t.max_connections) {
            thresholds.max_connections = Some(u32_value(n));
        }
        max_connection_duration = t
            .max_connection_duration
            .as_deref()
            .and_then(|d| duration("connectionPool.tcp.maxConnectionDuration", d));
        // Istio: the TCP idle timeout stands in for an HTTP one the policy leaves out.
        if idle_timeout.is_none() {
            idle_timeout = t
                .idle_timeout
                .as_deref()
                .and_then(|d| duration("connectionPool.tcp.idleTimeout", d));
        }
        if let Some(k) = &t.tcp_keepalive {
            let keepalive = cluster
                .upstream_connection_options
                .get_or_insert_with(UpstreamConnectionOptions::default)
                .tcp_keepalive
                .get_or_insert_with(EnvoyTcpKeepalive::default);
            if let Some(n) = k.probes.filter(|n| *n > 0) {
                keepalive.keepalive_probes = Some(u32_value(n));
            }
            if let Some(d) = k
                .time
                .as_deref()
                .and_then(|d| duration("connectionPool.tcp.tcpKeepalive.time", d))
            {
                keepalive.keepalive_time = Some(u32_value(whole_seconds(&d)));
            }
            if let Some(d) = k
                .interval
                .as_deref()
                .and_then(|d| duration("connectionPool.tcp.tcpKeepalive.interval", d))
            {
                keepalive.keepalive_interval = Some(u32_value(whole_seconds(&d)));
            }
        }
    }
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds],
        ..Default::default()
    });

    if idle_timeout.is_some()
        || max_requests_per_connection.is_some()
        || max_connection_duration.is_some()
    {
        let common = options
            .get_or_insert_default()
            .common_http_protocol_options
            .get_or_insert_default();
        if idle_timeout.is_some() {
            common.idle_timeout = idle_timeout;
        }
        if let Some(n) = max_requests_per_connection {
            common.max_requests_per_connection = Some(u32_value(n));
        }
        if max_connection_duration.is_some() {
            common.max_connection_duration = max_connection_duration;
        }
    }
    if let (Some(n), Some(h2)) = (max_concurrent_streams, http2_options(options)) {
        h2.max_concurrent_streams = Some(u32_value(n));
    }
    if http.is_some_and(|h| h.use_client_protocol == Some(true)) {
        // HTTP/1.1 upstream for HTTP/1.1 clients, HTTP/2 for HTTP/2 ones.
        options.get_or_insert_default().upstream_protocol_options = Some(
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                http3_protocol_options: None,
            }),
        );
    }
}

// ---------------------------------------------------------------------------
// Outlier detection

fn apply_outlier_detection(cluster: &mut Cluster, outlier: Option<&OutlierDetection>) {
    let Some(o) = outlier else {
        return;
    };
    let mut out = EnvoyOutlierDetection {
        // Success-rate ejection stays off, as in Istio.
        enforcing_success_rate: Some(u32_value(0)),
        ..Default::default()
    };
    // The deprecated consecutiveErrors counted 502, 503 and 504 only: Istio mapped it to
    // gateway failures and turned the 5xx detector off.
    if let Some(n) = positive(o.consecutive_errors) {
        out.consecutive_gateway_failure = Some(u32_value(n));
        out.enforcing_consecutive_gateway_failure = Some(u32_value(100));
        out.enforcing_consecutive_5xx = Some(u32_value(0));
    }
    // A count of 0 disables the detector (enforcement 0), any other enforces it always.
    if let Some(n) = o.consecutive_5xx_errors {
        out.consecutive_5xx = Some(u32_value(n));
        out.enforcing_consecutive_5xx = Some(u32_value(if n > 0 { 100 } else { 0 }));
    }
    if let Some(n) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(u32_value(n));
        out.enforcing_consecutive_gateway_failure = Some(u32_value(if n > 0 { 100 } else { 0 }));
    }
    out.interval = o
        .interval
        .as_deref()
        .and_then(|d| duration("outlierDetection.interval", d));
    out.base_ejection_time = o
        .base_ejection_time
        .as_deref()
        .and_then(|d| duration("outlierDetection.baseEjectionTime", d));
    if let Some(n) = positive(o.max_ejection_percent) {
        out.max_ejection_percent = Some(u32_value(n));
    }
    if o.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(n) = o.consecutive_local_origin_failures.filter(|n| *n > 0) {
            out.consecutive_local_origin_failure = Some(u32_value(n));
            out.enforcing_consecutive_local_origin_failure = Some(u32_value(100));
        }
        out.enforcing_local_origin_success_rate = Some(u32_value(0));
    }
    cluster.outlier_detection = Some(out);
    // Istio turns the panic threshold off (0) unless minHealthPercent asks for one: with
    // few pods per service, panic mode would send traffic to ejected hosts.
    let min_health = o.min_health_percent.unwrap_or(0);
    if min_health >= 0 {
        cluster
            .common_lb_config
            .get_or_insert_default()
            .healthy_panic_threshold = Some(Percent {
            value: f64::from(min_health),
        });
    }
}

// ---------------------------------------------------------------------------
// Load balancer

fn is_original_dst(cluster: &Cluster) -> bool {
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    match lb.and_then(|l| l.simple).unwrap_or_default() {
        SimpleLb::RoundRobin => {
            cluster.lb_policy = LbPolicy::RoundRobin as i32;
            cluster.lb_config = lb.and_then(slow_start).map(|s| {
                LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(s),
                })
            });
        }
        SimpleLb::Random => {
            cluster.lb_policy = LbPolicy::Random as i32;
            cluster.lb_config = None;
        }
        SimpleLb::Passthrough => {
            // Straight to the address the client dialled: no endpoints from EDS.
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            cluster.lb_config = None;
            cluster.eds_cluster_config = None;
            cluster.load_assignment = None;
            return;
        }
        // Istio's default is LEAST_REQUEST; LEAST_CONN is its deprecated name.
        SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified => {
            cluster.lb_policy = LbPolicy::LeastRequest as i32;
            cluster.lb_config = lb.and_then(slow_start).map(|s| {
                LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: Some(s),
                    ..Default::default()
                })
            });
        }
    }
    if let Some(hash) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        apply_consistent_hash(cluster, hash);
    }
}

/// Slow start from `warmup` (Istio's defaults: linear ramp from 10%) or the deprecated
/// `warmupDurationSecs`.
fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStartConfig> {
    if let Some(w) = &lb.warmup {
        let window = duration("loadBalancer.warmup.duration", &w.duration)?;
        return Some(SlowStartConfig {
            slow_start_window: Some(window),
            aggression: Some(RuntimeDouble {
                default_value: w.aggression.unwrap_or(1.0),
                // A key no runtime layer sets, so the value is the rule's.
                runtime_key: "isthmus.slow_start.aggression".to_string(),
            }),
            min_weight_percent: Some(Percent {
                value: w.minimum_percent.unwrap_or(10.0),
            }),
        });
    }
    let window = lb
        .warmup_duration_secs
        .as_deref()
        .and_then(|d| duration("loadBalancer.warmupDurationSecs", d))?;
    Some(SlowStartConfig {
        slow_start_window: Some(window),
        ..Default::default()
    })
}

/// Istio's `ApplyRingHashLoadBalancer`: maglev or ring hash; a ring hash the rule does
/// not size explicitly gets the deprecated `minimumRingSize` or 1024.
fn apply_consistent_hash(cluster: &mut Cluster, hash: &ConsistentHashLb) {
    if let Some(maglev) = &hash.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        cluster.lb_config = maglev.table_size.filter(|n| *n != 0).map(|n| {
            LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value: n }),
            })
        });
        return;
    }
    cluster.lb_policy = LbPolicy::RingHash as i32;
    let minimum_ring_size = match &hash.ring_hash {
        Some(ring) => ring.minimum_ring_size.filter(|n| *n != 0),
        None => Some(hash.minimum_ring_size.filter(|n| *n != 0).unwrap_or(1024)),
    };
    cluster.lb_config = minimum_ring_size.map(|n| {
        LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value: n }),
            ..Default::default()
        })
    });
}

// ---------------------------------------------------------------------------
// Client TLS

fn apply_tls(
    cluster: &mut Cluster,
    options: &mut Option<HttpProtocolOptions>,
    tls: &ClientTlsSettings,
    host: &str,
) {
    let mutual = match tls.mode.unwrap_or_default() {
        ClientTlsMode::Disable => return,
        // Mesh mTLS: super::mtls, for proxies that hold a workload certificate.
        ClientTlsMode::IstioMutual => return,
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
    };
    let mut common = CommonTlsContext::default();
    let from_secret = tls.credential_name.as_deref().filter(|c| !c.is_empty());
    if let Some(credential) = from_secret {
        tracing::warn!(
            cluster = %cluster.name,
            credential,
            "tls.credentialName is not supported yet (Secrets are not served to proxies): \
             originating TLS with the system CA bundle and no client certificate"
        );
    } else if mutual {
        let cert = tls.client_certificate.as_deref().filter(|c| !c.is_empty());
        let key = tls.private_key.as_deref().filter(|k| !k.is_empty());
        match (cert, key) {
            (Some(cert), Some(key)) => common.tls_certificates.push(TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }),
            _ => tracing::warn!(
                cluster = %cluster.name,
                "tls mode MUTUAL needs clientCertificate and privateKey: originating TLS without a client certificate"
            ),
        }
    }
    let insecure = tls.insecure_skip_verify == Some(true);
    if !insecure {
        let ca = from_secret
            .is_none()
            .then_some(tls.ca_certificates.as_deref())
            .flatten()
            .filter(|c| !c.is_empty())
            .unwrap_or(SYSTEM_CA_BUNDLE);
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(file(ca)),
                match_typed_subject_alt_names: tls
                    .subject_alt_names
                    .iter()
                    .map(|s| san_matcher(s))
                    .collect(),
                crl: tls
                    .ca_crl
                    .as_deref()
                    .filter(|c| from_secret.is_none() && !c.is_empty())
                    .map(file),
                ..Default::default()
            },
        ));
    }
    if http2_options(options).is_some() {
        common.alpn_protocols = vec!["h2".to_string()];
    }
    let explicit_sni = tls.sni.as_deref().filter(|s| !s.is_empty());
    if explicit_sni.is_none() {
        // Istio: HTTP requests present the host they are for (and verify it), the static
        // SNI below serves the rest.
        let upstream = options
            .get_or_insert_default()
            .upstream_http_protocol_options
            .get_or_insert_default();
        upstream.auto_sni = true;
        if tls.subject_alt_names.is_empty() && !insecure {
            upstream.auto_san_validation = true;
        }
    }
    let sni = match explicit_sni {
        Some(s) => s.to_string(),
        None if host.starts_with('*') => String::new(),
        None => host.to_string(),
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    cluster.transport_socket = Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&context))),
    });
}

/// An exact subject alt name, typed by its form: IP address, URI (`spiffe://…`),
/// e-mail, else DNS (where Envoy also honours wildcard certificates).
fn san_matcher(name: &str) -> SubjectAltNameMatcher {
    let san_type = if name.parse::<IpAddr>().is_ok() {
        SanType::IpAddress
    } else if name.contains("://") {
        SanType::Uri
    } else if name.contains('@') {
        SanType::Email
    } else {
        SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(name.to_string())),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}

/// A count Istio honours only when positive (0 means unset in its protos).
fn positive(n: Option<i32>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

/// A policy duration as a protobuf one; an unparsable one (validation reports it) is
/// ignored with a warning.
fn duration(field: &str, text: &str) -> Option<Duration> {
    let Some(d) = parse_duration(text) else {
        tracing::warn!(
            field,
            value = text,
            "ignoring an invalid duration in a DestinationRule"
        );
        return None;
    };
    Some(Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}

fn whole_seconds(d: &Duration) -> u32 {
    u32::try_from(d.seconds).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ApiVersion, ConfigSource,
    };
    use serde_json::{Value, json};

    const HOST: &str = "reviews.default.svc.cluster.local";

    fn dr(spec: Value) -> DestinationRule {
        serde_json::from_value(spec).expect("a DestinationRule spec")
    }

    fn policy(spec: Value) -> TrafficPolicy {
        serde_json::from_value(spec).expect("a TrafficPolicy")
    }

    /// The cluster the caller builds before applying a policy.
    fn eds_cluster(port: u16) -> Cluster {
        Cluster {
            name: format!("outbound|{port}||{HOST}"),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    resource_api_version: ApiVersion::V3 as i32,
                    ..Default::default()
                }),
                service_name: String::new(),
            }),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            lb_policy: LbPolicy::RoundRobin as i32,
            ..Default::default()
        }
    }

    fn built(p: Option<Value>, protocol: Protocol) -> Cluster {
        let p = p.map(policy);
        let mut c = eds_cluster(9080);
        apply(
            &mut c,
            p.as_ref(),
            PortInfo {
                port: 9080,
                protocol,
            },
            HOST,
        );
        c
    }

    fn http(p: Value) -> Cluster {
        built(Some(p), Protocol::Http)
    }

    fn thresholds(c: &Cluster) -> &Thresholds {
        let cb = c.circuit_breakers.as_ref().expect("circuit breakers");
        assert_eq!(cb.thresholds.len(), 1);
        &cb.thresholds[0]
    }

    fn options(c: &Cluster) -> Option<HttpProtocolOptions> {
        let any = c
            .typed_extension_protocol_options
            .get(HTTP_PROTOCOL_OPTIONS)?;
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        Some(HttpProtocolOptions::decode(any.value.as_slice()).expect("HttpProtocolOptions"))
    }

    fn upstream_protocol(c: &Cluster) -> Option<UpstreamProtocolOptions> {
        options(c).and_then(|o| o.upstream_protocol_options)
    }

    fn explicit_http2(c: &Cluster) -> Option<Http2ProtocolOptions> {
        match upstream_protocol(c)? {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            }) => Some(h2),
            _ => None,
        }
    }

    fn is_explicit_http1(c: &Cluster) -> bool {
        matches!(
            upstream_protocol(c),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::HttpProtocolOptions(_)),
                }
            ))
        )
    }

    fn tls_context(c: &Cluster) -> UpstreamTlsContext {
        let socket = c.transport_socket.as_ref().expect("a transport socket");
        assert_eq!(socket.name, "envoy.transport_sockets.tls");
        let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("no typed config: {socket:?}");
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        );
        UpstreamTlsContext::decode(any.value.as_slice()).expect("UpstreamTlsContext")
    }

    fn validation(ctx: &UpstreamTlsContext) -> Option<CertificateValidationContext> {
        match ctx
            .common_tls_context
            .as_ref()?
            .validation_context_type
            .clone()?
        {
            ValidationContextType::ValidationContext(v) => Some(v),
            other => panic!("unexpected validation context {other:?}"),
        }
    }

    fn filename(d: &Option<DataSource>) -> Option<&str> {
        match d.as_ref()?.specifier.as_ref()? {
            Specifier::Filename(f) => Some(f),
            other => panic!("not a file: {other:?}"),
        }
    }

    fn secs(s: i64) -> Option<Duration> {
        Some(Duration {
            seconds: s,
            nanos: 0,
        })
    }

    fn u32v(n: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value: n })
    }

    fn lb(c: &Cluster) -> LbPolicy {
        LbPolicy::try_from(c.lb_policy).expect("a known lb policy")
    }

    // -----------------------------------------------------------------------
    // effective_policy

    /// A rule setting every group at every level, each with a distinct value.
    fn layered() -> DestinationRule {
        dr(json!({
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM"},
                "connectionPool": {"tcp": {"maxConnections": 1}},
                "outlierDetection": {"consecutive5xxErrors": 1},
                "tls": {"mode": "SIMPLE", "sni": "top"},
                "tunnel": {"targetHost": "proxy", "targetPort": 8080},
                "portLevelSettings": [
                    {"port": {"number": 8080}, "loadBalancer": {"simple": "LEAST_REQUEST"}},
                    {"port": {"number": 9090}, "connectionPool": {"tcp": {"maxConnections": 2}},
                     "tls": {"mode": "DISABLE"}}
                ]
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {
                    "outlierDetection": {"consecutive5xxErrors": 2},
                    "portLevelSettings": [
                        {"port": {"number": 7070}, "tls": {"mode": "MUTUAL", "sni": "v2-7070"}}
                    ]
                }},
                {"name": "v3", "labels": {"version": "v3"}, "trafficPolicy": {
                    "loadBalancer": {"simple": "ROUND_ROBIN"}
                }}
            ]
        }))
    }

    fn simple(p: &TrafficPolicy) -> Option<SimpleLb> {
        p.load_balancer.as_ref().and_then(|l| l.simple)
    }

    fn max_connections(p: &TrafficPolicy) -> Option<i32> {
        p.connection_pool.as_ref()?.tcp.as_ref()?.max_connections
    }

    fn consecutive_5xx(p: &TrafficPolicy) -> Option<u32> {
        p.outlier_detection.as_ref()?.consecutive_5xx_errors
    }

    fn sni(p: &TrafficPolicy) -> Option<&str> {
        p.tls.as_ref()?.sni.as_deref()
    }

    #[test]
    fn no_policy_anywhere_is_none() {
        let rule = dr(json!({"host": "reviews", "subsets": [{"name": "v1"}]}));
        assert_eq!(effective_policy(&rule, None, 80), None);
        assert_eq!(effective_policy(&rule, Some("v1"), 80), None);
        assert_eq!(effective_policy(&rule, Some("missing"), 80), None);
    }

    #[test]
    fn top_level_applies_to_ports_without_settings() {
        let p = effective_policy(&layered(), None, 80).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::Random));
        assert_eq!(max_connections(&p), Some(1));
        assert_eq!(consecutive_5xx(&p), Some(1));
        assert_eq!(sni(&p), Some("top"));
        assert!(p.tunnel.is_some());
        assert!(p.port_level_settings.is_empty());
    }

    #[test]
    fn port_level_settings_replace_the_top_level_policy() {
        // Port 8080 sets only the load balancer: the other groups fall back to the
        // defaults (Istio does not inherit them from the top level).
        let p = effective_policy(&layered(), None, 8080).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::LeastRequest));
        assert_eq!(p.connection_pool, None);
        assert_eq!(p.outlier_detection, None);
        assert_eq!(p.tls, None);
        assert_eq!(p.tunnel, None);
        assert!(p.port_level_settings.is_empty());

        let p = effective_policy(&layered(), None, 9090).unwrap();
        assert_eq!(simple(&p), None);
        assert_eq!(max_connections(&p), Some(2));
        assert_eq!(
            p.tls.as_ref().and_then(|t| t.mode),
            Some(ClientTlsMode::Disable)
        );
    }

    #[test]
    fn subset_without_policy_or_unknown_subset_gets_the_rule_policy() {
        let rule = layered();
        for subset in ["v1", "nope"] {
            assert_eq!(
                effective_policy(&rule, Some(subset), 80),
                effective_policy(&rule, None, 80),
                "{subset}"
            );
            assert_eq!(
                effective_policy(&rule, Some(subset), 8080),
                effective_policy(&rule, None, 8080),
                "{subset}"
            );
        }
    }

    #[test]
    fn subset_policy_overrides_group_by_group() {
        let rule = layered();
        // v2 sets outlier detection only: the rest comes from the rule.
        let p = effective_policy(&rule, Some("v2"), 80).unwrap();
        assert_eq!(consecutive_5xx(&p), Some(2));
        assert_eq!(simple(&p), Some(SimpleLb::Random));
        assert_eq!(max_connections(&p), Some(1));
        assert_eq!(sni(&p), Some("top"));
        assert!(p.tunnel.is_some());
        assert!(p.port_level_settings.is_empty());
        // On a port with rule-level settings, the subset merges onto those.
        let p = effective_policy(&rule, Some("v2"), 8080).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::LeastRequest));
        assert_eq!(consecutive_5xx(&p), Some(2));
        assert_eq!(p.connection_pool, None);
        assert_eq!(p.tls, None);
        // v3 sets the load balancer only.
        let p = effective_policy(&rule, Some("v3"), 9090).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::RoundRobin));
        assert_eq!(max_connections(&p), Some(2));
        assert_eq!(
            p.tls.as_ref().and_then(|t| t.mode),
            Some(ClientTlsMode::Disable)
        );
    }

    #[test]
    fn subset_port_level_settings_replace_all_four_groups() {
        let p = effective_policy(&layered(), Some("v2"), 7070).unwrap();
        assert_eq!(sni(&p), Some("v2-7070"));
        assert_eq!(
            p.tls.as_ref().and_then(|t| t.mode),
            Some(ClientTlsMode::Mutual)
        );
        assert_eq!(p.load_balancer, None);
        assert_eq!(p.connection_pool, None);
        assert_eq!(p.outlier_detection, None);
        // Not a port-level setting: still the rule's.
        assert!(p.tunnel.is_some());
        assert!(p.port_level_settings.is_empty());
    }

    #[test]
    fn subset_policy_alone() {
        let rule = dr(json!({
            "host": "reviews",
            "subsets": [{"name": "v1", "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM"},
                "portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]
            }}]
        }));
        let p = effective_policy(&rule, Some("v1"), 81).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::Random));
        assert!(p.port_level_settings.is_empty());
        let p = effective_policy(&rule, Some("v1"), 80).unwrap();
        assert_eq!(simple(&p), None);
        assert!(p.tls.is_some());
        assert_eq!(effective_policy(&rule, None, 80), None);
    }

    #[test]
    fn first_port_level_entry_for_a_port_wins() {
        let rule = dr(json!({
            "host": "reviews",
            "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}},
                {"port": {"number": 80}, "loadBalancer": {"simple": "ROUND_ROBIN"}},
                {"loadBalancer": {"simple": "LEAST_REQUEST"}}
            ]}
        }));
        let p = effective_policy(&rule, None, 80).unwrap();
        assert_eq!(simple(&p), Some(SimpleLb::Random));
        // An entry without a port matches nothing.
        let p = effective_policy(&rule, None, 81).unwrap();
        assert_eq!(simple(&p), None);
    }

    #[test]
    fn bookinfo_destination_rules() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/istio/samples/bookinfo/networking/destination-rule-all.yaml"
        );
        let text = std::fs::read_to_string(path).expect("Istio's bookinfo sample");
        let docs = isthmus_model::parse_documents(
            std::path::Path::new(path),
            &text,
            "default",
            "cluster.local",
        );
        let rules: Vec<DestinationRule> = docs
            .iter()
            .filter_map(|d| match &d.object {
                Some(isthmus_model::Object::DestinationRule(dr)) => Some(dr.spec.clone()),
                _ => None,
            })
            .collect();
        let hosts: Vec<&str> = rules.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["productpage", "reviews", "ratings", "details"]);
        let reviews = &rules[1];
        let subsets: Vec<&str> = reviews.subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(subsets, ["v1", "v2", "v3"]);
        for rule in &rules {
            for subset in [None]
                .into_iter()
                .chain(rule.subsets.iter().map(|s| Some(s.name.as_str())))
            {
                let p = effective_policy(rule, subset, 9080);
                assert_eq!(p, None, "{} {subset:?}", rule.host);
                assert!(hash_policies(p.as_ref()).is_empty());
                // Istio's defaults only.
                let mut c = eds_cluster(9080);
                apply(
                    &mut c,
                    p.as_ref(),
                    PortInfo {
                        port: 9080,
                        protocol: Protocol::Http,
                    },
                    HOST,
                );
                let mut expected = eds_cluster(9080);
                apply(
                    &mut expected,
                    None,
                    PortInfo {
                        port: 9080,
                        protocol: Protocol::Http,
                    },
                    HOST,
                );
                assert_eq!(c, expected);
                assert_eq!(lb(&c), LbPolicy::LeastRequest);
                assert!(c.transport_socket.is_none());
            }
        }
    }

    // -----------------------------------------------------------------------
    // Defaults and upstream protocol

    #[test]
    fn defaults_without_a_policy() {
        let c = built(None, Protocol::Http);
        let t = thresholds(&c);
        assert_eq!(t.priority, RoutingPriority::Default as i32);
        assert_eq!(t.max_connections, u32v(u32::MAX));
        assert_eq!(t.max_pending_requests, u32v(u32::MAX));
        assert_eq!(t.max_requests, u32v(u32::MAX));
        assert_eq!(t.max_retries, u32v(u32::MAX));
        assert!(t.track_remaining);
        assert_eq!(c.common_lb_config, Some(Default::default()));
        assert_eq!(lb(&c), LbPolicy::LeastRequest);
        assert_eq!(c.lb_config, None);
        assert_eq!(c.connect_timeout, secs(10));
        assert!(c.eds_cluster_config.is_some());
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert!(c.outlier_detection.is_none());
        assert!(c.transport_socket.is_none());
        assert!(c.upstream_connection_options.is_none());
        // HTTP/1.1, Envoy's default: no protocol options at all.
        assert!(c.typed_extension_protocol_options.is_empty());
        // An empty policy is the same as none.
        assert_eq!(built(Some(json!({})), Protocol::Http), c);
    }

    #[test]
    fn http2_and_grpc_ports_speak_http2_upstream() {
        for protocol in [Protocol::Http2, Protocol::Grpc] {
            let c = built(None, protocol);
            assert_eq!(
                explicit_http2(&c),
                Some(Http2ProtocolOptions::default()),
                "{protocol}"
            );
            assert_eq!(options(&c).unwrap().common_http_protocol_options, None);
        }
        for protocol in [
            Protocol::Http,
            Protocol::Tcp,
            Protocol::Tls,
            Protocol::Https,
            Protocol::Unsupported,
        ] {
            let c = built(None, protocol);
            assert!(c.typed_extension_protocol_options.is_empty(), "{protocol}");
        }
    }

    #[test]
    fn h2_upgrade_policy() {
        let upgrade = json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}});
        assert!(explicit_http2(&http(upgrade.clone())).is_some());
        // Only HTTP ports are upgraded; opaque TCP stays as it is.
        let c = built(Some(upgrade), Protocol::Tcp);
        assert!(c.typed_extension_protocol_options.is_empty());
        // DO_NOT_UPGRADE and DEFAULT leave HTTP/1.1, and never downgrade an HTTP/2 port.
        for policy in ["DO_NOT_UPGRADE", "DEFAULT"] {
            let p = json!({"connectionPool": {"http": {"h2UpgradePolicy": policy}}});
            assert!(
                http(p.clone()).typed_extension_protocol_options.is_empty(),
                "{policy}"
            );
            assert!(
                explicit_http2(&built(Some(p), Protocol::Grpc)).is_some(),
                "{policy}"
            );
        }
    }

    #[test]
    fn use_client_protocol() {
        let p = json!({"connectionPool": {"http": {"useClientProtocol": true}}});
        for protocol in [Protocol::Http, Protocol::Grpc] {
            let c = built(Some(p.clone()), protocol);
            assert_eq!(
                upstream_protocol(&c),
                Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                    UseDownstreamHttpConfig {
                        http_protocol_options: Some(Http1ProtocolOptions::default()),
                        http2_protocol_options: Some(Http2ProtocolOptions::default()),
                        http3_protocol_options: None,
                    }
                )),
                "{protocol}"
            );
        }
        // It wins over an upgrade (which validation rejects anyway).
        let c = http(
            json!({"connectionPool": {"http": {"useClientProtocol": true, "h2UpgradePolicy": "UPGRADE"}}}),
        );
        assert!(matches!(
            upstream_protocol(&c),
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
    }

    // -----------------------------------------------------------------------
    // Load balancer

    fn with_lb(lb: Value) -> Cluster {
        http(json!({"loadBalancer": lb}))
    }

    #[test]
    fn simple_load_balancers() {
        for (simple, expected) in [
            ("ROUND_ROBIN", LbPolicy::RoundRobin),
            ("LEAST_REQUEST", LbPolicy::LeastRequest),
            ("LEAST_CONN", LbPolicy::LeastRequest),
            ("RANDOM", LbPolicy::Random),
            ("UNSPECIFIED", LbPolicy::LeastRequest),
        ] {
            let c = with_lb(json!({"simple": simple}));
            assert_eq!(lb(&c), expected, "{simple}");
            assert_eq!(c.lb_config, None, "{simple}");
            assert!(c.eds_cluster_config.is_some(), "{simple}");
        }
        assert_eq!(lb(&with_lb(json!({}))), LbPolicy::LeastRequest);
    }

    #[test]
    fn passthrough_makes_an_original_dst_cluster() {
        let c = with_lb(json!({"simple": "PASSTHROUGH"}));
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32
            ))
        );
        assert_eq!(lb(&c), LbPolicy::ClusterProvided);
        assert_eq!(c.eds_cluster_config, None);
        assert_eq!(c.load_assignment, None);
        assert_eq!(c.lb_config, None);
        // The rest of the policy still applies.
        assert!(c.circuit_breakers.is_some());
        // A cluster that already is ORIGINAL_DST keeps CLUSTER_PROVIDED whatever the rule says.
        let mut c = eds_cluster(80);
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
        c.eds_cluster_config = None;
        let p = policy(json!({"loadBalancer": {"consistentHash": {"useSourceIp": true}}}));
        apply(
            &mut c,
            Some(&p),
            PortInfo {
                port: 80,
                protocol: Protocol::Http,
            },
            HOST,
        );
        assert_eq!(lb(&c), LbPolicy::ClusterProvided);
        assert_eq!(c.lb_config, None);
    }

    fn ring_size(c: &Cluster) -> Option<u64> {
        match &c.lb_config {
            Some(LbConfig::RingHashLbConfig(r)) => r.minimum_ring_size.map(|n| n.value),
            None => None,
            other => panic!("not a ring hash config: {other:?}"),
        }
    }

    #[test]
    fn consistent_hash_ring_hash() {
        // No ringHash or maglev: a ring of Istio's default size, or the deprecated field's.
        let c = with_lb(json!({"consistentHash": {"httpHeaderName": "x-user"}}));
        assert_eq!(lb(&c), LbPolicy::RingHash);
        assert_eq!(ring_size(&c), Some(1024));
        let c = with_lb(json!({"consistentHash": {"useSourceIp": true, "minimumRingSize": 2048}}));
        assert_eq!(ring_size(&c), Some(2048));
        // ringHash: its size, or Envoy's default when it gives none.
        let c = with_lb(
            json!({"consistentHash": {"useSourceIp": true, "ringHash": {"minimumRingSize": 4096}}}),
        );
        assert_eq!(lb(&c), LbPolicy::RingHash);
        assert_eq!(ring_size(&c), Some(4096));
        let c = with_lb(json!({"consistentHash": {"useSourceIp": true, "ringHash": {}}}));
        assert_eq!(lb(&c), LbPolicy::RingHash);
        assert_eq!(c.lb_config, None);
    }

    #[test]
    fn consistent_hash_maglev() {
        let c = with_lb(
            json!({"consistentHash": {"httpHeaderName": "x-user", "maglev": {"tableSize": 65537}}}),
        );
        assert_eq!(lb(&c), LbPolicy::Maglev);
        assert_eq!(
            c.lb_config,
            Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value: 65537 })
            }))
        );
        let c = with_lb(json!({"consistentHash": {"httpHeaderName": "x-user", "maglev": {}}}));
        assert_eq!(lb(&c), LbPolicy::Maglev);
        assert_eq!(c.lb_config, None);
    }

    #[test]
    fn warmup_is_slow_start() {
        let c = with_lb(json!({"simple": "ROUND_ROBIN", "warmupDurationSecs": "30s"}));
        assert_eq!(
            c.lb_config,
            Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                slow_start_config: Some(SlowStartConfig {
                    slow_start_window: secs(30),
                    ..Default::default()
                })
            }))
        );
        // The default algorithm (LEAST_REQUEST) takes it too.
        let c = with_lb(json!({"warmup": {"duration": "1m"}}));
        let Some(LbConfig::LeastRequestLbConfig(lr)) = &c.lb_config else {
            panic!("{:?}", c.lb_config);
        };
        let s = lr.slow_start_config.as_ref().unwrap();
        assert_eq!(s.slow_start_window, secs(60));
        assert_eq!(s.aggression.as_ref().unwrap().default_value, 1.0);
        assert!(!s.aggression.as_ref().unwrap().runtime_key.is_empty());
        assert_eq!(s.min_weight_percent, Some(Percent { value: 10.0 }));
        // warmup wins over the deprecated field.
        let c = with_lb(json!({
            "simple": "LEAST_REQUEST",
            "warmupDurationSecs": "5s",
            "warmup": {"duration": "20s", "minimumPercent": 25.0, "aggression": 2.0}
        }));
        let Some(LbConfig::LeastRequestLbConfig(lr)) = &c.lb_config else {
            panic!("{:?}", c.lb_config);
        };
        let s = lr.slow_start_config.as_ref().unwrap();
        assert_eq!(s.slow_start_window, secs(20));
        assert_eq!(s.aggression.as_ref().unwrap().default_value, 2.0);
        assert_eq!(s.min_weight_percent, Some(Percent { value: 25.0 }));
        // RANDOM has no slow start.
        let c = with_lb(json!({"simple": "RANDOM", "warmupDurationSecs": "5s"}));
        assert_eq!(c.lb_config, None);
    }

    // -----------------------------------------------------------------------
    // Connection pool

    #[test]
    fn tcp_connection_pool() {
        let c = http(json!({"connectionPool": {"tcp": {
            "maxConnections": 100,
            "connectTimeout": "30ms",
            "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"},
            "maxConnectionDuration": "1h"
        }}}));
        let t = thresholds(&c);
        assert_eq!(t.max_connections, u32v(100));
        assert_eq!(t.max_pending_requests, u32v(u32::MAX));
        assert_eq!(t.max_requests, u32v(u32::MAX));
        assert_eq!(t.max_retries, u32v(u32::MAX));
        assert!(t.track_remaining);
        assert_eq!(
            c.connect_timeout,
            Some(Duration {
                seconds: 0,
                nanos: 30_000_000
            })
        );
        let keepalive = c
            .upstream_connection_options
            .as_ref()
            .unwrap()
            .tcp_keepalive
            .as_ref()
            .unwrap();
        assert_eq!(keepalive.keepalive_probes, u32v(3));
        assert_eq!(keepalive.keepalive_time, u32v(7200));
        assert_eq!(keepalive.keepalive_interval, u32v(75));
        let o = options(&c).unwrap();
        let common = o.common_http_protocol_options.unwrap();
        assert_eq!(common.max_connection_duration, secs(3600));
        assert_eq!(common.idle_timeout, None);
        // HTTP/1.1 made explicit, as Envoy requires a protocol.
        assert!(is_explicit_http1(&c));
    }

    #[test]
    fn empty_keepalive_turns_keepalive_on_with_os_defaults() {
        let c = http(json!({"connectionPool": {"tcp": {"tcpKeepalive": {}}}}));
        let keepalive = c
            .upstream_connection_options
            .unwrap()
            .tcp_keepalive
            .unwrap();
        assert_eq!(keepalive, EnvoyTcpKeepalive::default());
    }

    #[test]
    #[allow(deprecated)] // checks the deprecated fields stay unset
    fn http_connection_pool() {
        let c = http(json!({"connectionPool": {"http": {
            "http1MaxPendingRequests": 10,
            "http2MaxRequests": 20,
            "maxRequestsPerConnection": 1,
            "maxRetries": 4,
            "idleTimeout": "90s"
        }}}));
        let t = thresholds(&c);
        assert_eq!(t.max_connections, u32v(u32::MAX));
        assert_eq!(t.max_pending_requests, u32v(10));
        assert_eq!(t.max_requests, u32v(20));
        assert_eq!(t.max_retries, u32v(4));
        // Not the deprecated cluster fields: the typed HTTP protocol options.
        assert_eq!(c.common_http_protocol_options, None);
        assert_eq!(c.max_requests_per_connection, None);
        let common = options(&c).unwrap().common_http_protocol_options.unwrap();
        assert_eq!(common.idle_timeout, secs(90));
        assert_eq!(common.max_requests_per_connection, u32v(1));
        assert_eq!(common.max_connection_duration, None);
        assert!(is_explicit_http1(&c));
    }

    #[test]
    fn zero_and_negative_limits_keep_the_defaults() {
        let c = http(json!({"connectionPool": {
            "tcp": {"maxConnections": 0},
            "http": {"http1MaxPendingRequests": -1, "http2MaxRequests": 0, "maxRetries": 0,
                     "maxRequestsPerConnection": 0, "maxConcurrentStreams": 0}
        }}));
        assert_eq!(thresholds(&c), &default_thresholds());
        assert!(c.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn idle_timeout_http_then_tcp() {
        let c = http(json!({"connectionPool": {"tcp": {"idleTimeout": "1h"}}}));
        let common = options(&c).unwrap().common_http_protocol_options.unwrap();
        assert_eq!(common.idle_timeout, secs(3600));
        let c = http(
            json!({"connectionPool": {"tcp": {"idleTimeout": "1h"}, "http": {"idleTimeout": "5m"}}}),
        );
        let common = options(&c).unwrap().common_http_protocol_options.unwrap();
        assert_eq!(common.idle_timeout, secs(300));
    }

    #[test]
    fn max_concurrent_streams_applies_to_http2_upstreams() {
        let p = json!({"connectionPool": {"http": {"maxConcurrentStreams": 100}}});
        let c = built(Some(p.clone()), Protocol::Grpc);
        assert_eq!(
            explicit_http2(&c).unwrap().max_concurrent_streams,
            u32v(100)
        );
        // An upgraded HTTP port too.
        let c = http(
            json!({"connectionPool": {"http": {"maxConcurrentStreams": 7, "h2UpgradePolicy": "UPGRADE"}}}),
        );
        assert_eq!(explicit_http2(&c).unwrap().max_concurrent_streams, u32v(7));
        // Meaningless for HTTP/1.1.
        let c = http(p);
        assert!(c.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn common_options_and_http2_share_one_extension() {
        let c = built(
            Some(
                json!({"connectionPool": {"http": {"idleTimeout": "10s", "maxConcurrentStreams": 5}}}),
            ),
            Protocol::Http2,
        );
        assert_eq!(c.typed_extension_protocol_options.len(), 1);
        let o = options(&c).unwrap();
        assert_eq!(
            o.common_http_protocol_options.unwrap().idle_timeout,
            secs(10)
        );
        assert_eq!(explicit_http2(&c).unwrap().max_concurrent_streams, u32v(5));
    }

    #[test]
    fn invalid_durations_are_ignored() {
        let c = http(
            json!({"connectionPool": {"tcp": {"connectTimeout": "soon", "idleTimeout": "-1s"}}}),
        );
        assert_eq!(c.connect_timeout, secs(10));
        assert!(c.typed_extension_protocol_options.is_empty());
    }

    // -----------------------------------------------------------------------
    // Outlier detection

    #[test]
    fn outlier_detection() {
        let c = http(json!({"outlierDetection": {
            "consecutive5xxErrors": 7,
            "consecutiveGatewayErrors": 3,
            "interval": "5m",
            "baseEjectionTime": "15m",
            "maxEjectionPercent": 50,
            "minHealthPercent": 30
        }}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_5xx, u32v(7));
        assert_eq!(o.enforcing_consecutive_5xx, u32v(100));
        assert_eq!(o.consecutive_gateway_failure, u32v(3));
        assert_eq!(o.enforcing_consecutive_gateway_failure, u32v(100));
        assert_eq!(o.interval, secs(300));
        assert_eq!(o.base_ejection_time, secs(900));
        assert_eq!(o.max_ejection_percent, u32v(50));
        assert_eq!(o.enforcing_success_rate, u32v(0));
        assert!(!o.split_external_local_origin_errors);
        assert_eq!(o.consecutive_local_origin_failure, None);
        let common = c.common_lb_config.as_ref().unwrap();
        assert_eq!(
            common.healthy_panic_threshold,
            Some(Percent { value: 30.0 })
        );
    }

    #[test]
    fn outlier_detection_defaults_and_zero_counts() {
        // Unset counts are left to Envoy; the panic threshold is turned off.
        let c = http(json!({"outlierDetection": {"interval": "1s"}}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_5xx, None);
        assert_eq!(o.enforcing_consecutive_5xx, None);
        assert_eq!(o.consecutive_gateway_failure, None);
        assert_eq!(o.max_ejection_percent, None);
        assert_eq!(o.base_ejection_time, None);
        assert_eq!(o.enforcing_success_rate, u32v(0));
        assert_eq!(
            c.common_lb_config.as_ref().unwrap().healthy_panic_threshold,
            Some(Percent { value: 0.0 })
        );
        // A count of 0 switches its detector off.
        let c = http(
            json!({"outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 0}}),
        );
        let o = c.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_5xx, u32v(0));
        assert_eq!(o.enforcing_consecutive_5xx, u32v(0));
        assert_eq!(o.consecutive_gateway_failure, u32v(0));
        assert_eq!(o.enforcing_consecutive_gateway_failure, u32v(0));
    }

    #[test]
    fn deprecated_consecutive_errors_count_gateway_errors() {
        let c = http(json!({"outlierDetection": {"consecutiveErrors": 5}}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_gateway_failure, u32v(5));
        assert_eq!(o.enforcing_consecutive_gateway_failure, u32v(100));
        assert_eq!(o.consecutive_5xx, None);
        assert_eq!(o.enforcing_consecutive_5xx, u32v(0));
        // The newer fields win.
        let c =
            http(json!({"outlierDetection": {"consecutiveErrors": 5, "consecutive5xxErrors": 2}}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_5xx, u32v(2));
        assert_eq!(o.enforcing_consecutive_5xx, u32v(100));
        assert_eq!(o.consecutive_gateway_failure, u32v(5));
    }

    #[test]
    fn local_origin_failures() {
        let c = http(json!({"outlierDetection": {
            "splitExternalLocalOriginErrors": true,
            "consecutiveLocalOriginFailures": 4
        }}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert!(o.split_external_local_origin_errors);
        assert_eq!(o.consecutive_local_origin_failure, u32v(4));
        assert_eq!(o.enforcing_consecutive_local_origin_failure, u32v(100));
        assert_eq!(o.enforcing_local_origin_success_rate, u32v(0));
        // Without the split, local-origin failures are not counted apart.
        let c = http(json!({"outlierDetection": {"consecutiveLocalOriginFailures": 4}}));
        let o = c.outlier_detection.as_ref().unwrap();
        assert!(!o.split_external_local_origin_errors);
        assert_eq!(o.consecutive_local_origin_failure, None);
        assert_eq!(o.enforcing_local_origin_success_rate, None);
    }

    // -----------------------------------------------------------------------
    // TLS

    fn with_tls(tls: Value) -> Cluster {
        http(json!({"tls": tls}))
    }

    fn san(t: SanType, name: &str) -> SubjectAltNameMatcher {
        SubjectAltNameMatcher {
            san_type: t as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(name.to_string())),
                ignore_case: false,
            }),
            oid: String::new(),
        }
    }

    #[test]
    fn tls_disable_and_no_tls() {
        assert!(
            with_tls(json!({"mode": "DISABLE"}))
                .transport_socket
                .is_none()
        );
        assert!(with_tls(json!({})).transport_socket.is_none());
        assert!(http(json!({})).transport_socket.is_none());
        assert!(
            with_tls(json!({"mode": "DISABLE"}))
                .typed_extension_protocol_options
                .is_empty()
        );
    }

    #[test]
    fn tls_istio_mutual_is_not_supported_yet() {
        let c = with_tls(json!({"mode": "ISTIO_MUTUAL", "sni": "x"}));
        assert!(c.transport_socket.is_none());
        assert!(c.transport_socket_matches.is_empty());
        assert!(c.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn tls_simple_defaults() {
        let c = with_tls(json!({"mode": "SIMPLE"}));
        let ctx = tls_context(&c);
        assert_eq!(ctx.sni, HOST);
        let common = ctx.common_tls_context.as_ref().unwrap();
        assert!(common.tls_certificates.is_empty());
        assert!(common.alpn_protocols.is_empty());
        let v = validation(&ctx).unwrap();
        assert_eq!(filename(&v.trusted_ca), Some(SYSTEM_CA_BUNDLE));
        assert!(v.match_typed_subject_alt_names.is_empty());
        assert_eq!(v.crl, None);
        // As in Istio, HTTP requests present (and verify) the host they are for.
        let upstream = options(&c).unwrap().upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni);
        assert!(upstream.auto_san_validation);
        assert!(is_explicit_http1(&c));
    }

    #[test]
    #[allow(deprecated)] // checks the deprecated fields stay unset
    fn tls_simple_with_sni_sans_and_ca() {
        let c = with_tls(json!({
            "mode": "SIMPLE",
            "sni": "api.example.com",
            "caCertificates": "/etc/certs/ca.pem",
            "caCrl": "/etc/certs/crl.pem",
            "subjectAltNames": ["api.example.com", "spiffe://td/ns/a/sa/b", "10.0.0.1", "ops@example.com"]
        }));
        let ctx = tls_context(&c);
        assert_eq!(ctx.sni, "api.example.com");
        let v = validation(&ctx).unwrap();
        assert_eq!(filename(&v.trusted_ca), Some("/etc/certs/ca.pem"));
        assert_eq!(filename(&v.crl), Some("/etc/certs/crl.pem"));
        assert_eq!(
            v.match_typed_subject_alt_names,
            vec![
                san(SanType::Dns, "api.example.com"),
                san(SanType::Uri, "spiffe://td/ns/a/sa/b"),
                san(SanType::IpAddress, "10.0.0.1"),
                san(SanType::Email, "ops@example.com"),
            ]
        );
        assert!(v.match_subject_alt_names.is_empty());
        // An explicit SNI: no auto SNI, so no HTTP options at all on an HTTP/1.1 port.
        assert!(c.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn tls_sans_without_sni_keep_auto_sni_only() {
        let c = with_tls(json!({"mode": "SIMPLE", "subjectAltNames": ["reviews"]}));
        let upstream = options(&c).unwrap().upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni);
        assert!(!upstream.auto_san_validation);
        assert_eq!(tls_context(&c).sni, HOST);
    }

    #[test]
    fn tls_insecure_skip_verify() {
        let c = with_tls(
            json!({"mode": "SIMPLE", "insecureSkipVerify": true, "caCertificates": "/ca.pem"}),
        );
        let ctx = tls_context(&c);
        assert_eq!(validation(&ctx), None);
        let upstream = options(&c).unwrap().upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni);
        assert!(!upstream.auto_san_validation);
    }

    #[test]
    fn tls_mutual() {
        let c = with_tls(json!({
            "mode": "MUTUAL",
            "clientCertificate": "/etc/certs/client.pem",
            "privateKey": "/etc/certs/key.pem",
            "caCertificates": "/etc/certs/ca.pem",
            "sni": "db.example.com"
        }));
        let ctx = tls_context(&c);
        assert_eq!(ctx.sni, "db.example.com");
        let common = ctx.common_tls_context.as_ref().unwrap();
        assert_eq!(common.tls_certificates.len(), 1);
        let cert = &common.tls_certificates[0];
        assert_eq!(
            filename(&cert.certificate_chain),
            Some("/etc/certs/client.pem")
        );
        assert_eq!(filename(&cert.private_key), Some("/etc/certs/key.pem"));
        let v = validation(&ctx).unwrap();
        assert_eq!(filename(&v.trusted_ca), Some("/etc/certs/ca.pem"));
        // Without the files (validation rejects that) TLS stays on, with no certificate.
        let ctx = tls_context(&with_tls(
            json!({"mode": "MUTUAL", "clientCertificate": "/c.pem"}),
        ));
        assert!(ctx.common_tls_context.unwrap().tls_certificates.is_empty());
    }

    #[test]
    fn tls_credential_name_is_simple_without_files() {
        for mode in ["SIMPLE", "MUTUAL"] {
            let ctx = tls_context(&with_tls(json!({
                "mode": mode,
                "credentialName": "client-credential",
                "caCrl": "/crl.pem",
                "subjectAltNames": ["api.example.com"]
            })));
            assert_eq!(ctx.sni, HOST);
            let common = ctx.common_tls_context.as_ref().unwrap();
            assert!(common.tls_certificates.is_empty(), "{mode}");
            let v = validation(&ctx).unwrap();
            assert_eq!(filename(&v.trusted_ca), Some(SYSTEM_CA_BUNDLE), "{mode}");
            assert_eq!(v.crl, None);
            assert_eq!(
                v.match_typed_subject_alt_names,
                vec![san(SanType::Dns, "api.example.com")]
            );
        }
    }

    #[test]
    fn tls_on_http2_advertises_h2() {
        let c = built(
            Some(json!({"tls": {"mode": "SIMPLE", "sni": "grpc.example.com"}})),
            Protocol::Grpc,
        );
        let ctx = tls_context(&c);
        assert_eq!(ctx.common_tls_context.unwrap().alpn_protocols, ["h2"]);
        assert!(explicit_http2(&c).is_some());
        // Not when the client's protocol is used.
        let c = built(
            Some(
                json!({"tls": {"mode": "SIMPLE"}, "connectionPool": {"http": {"useClientProtocol": true}}}),
            ),
            Protocol::Grpc,
        );
        assert!(
            tls_context(&c)
                .common_tls_context
                .unwrap()
                .alpn_protocols
                .is_empty()
        );
        let upstream = options(&c).unwrap().upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni);
    }

    #[test]
    fn tls_to_a_wildcard_host_has_no_static_sni() {
        let p = policy(json!({"tls": {"mode": "SIMPLE"}}));
        let mut c = eds_cluster(443);
        apply(
            &mut c,
            Some(&p),
            PortInfo {
                port: 443,
                protocol: Protocol::Tls,
            },
            "*.example.com",
        );
        assert_eq!(tls_context(&c).sni, "");
    }

    // -----------------------------------------------------------------------
    // Hash policies

    fn hashes(lb: Value) -> Vec<HashPolicy> {
        hash_policies(Some(&policy(json!({"loadBalancer": lb}))))
    }

    fn one(spec: PolicySpecifier) -> Vec<HashPolicy> {
        vec![HashPolicy {
            terminal: false,
            policy_specifier: Some(spec),
        }]
    }

    #[test]
    fn hash_policy_per_key() {
        assert_eq!(
            hashes(json!({"consistentHash": {"httpHeaderName": "x-user"}})),
            one(PolicySpecifier::Header(Header {
                header_name: "x-user".into(),
                regex_rewrite: None
            }))
        );
        assert_eq!(
            hashes(json!({"consistentHash": {"useSourceIp": true}})),
            one(PolicySpecifier::ConnectionProperties(
                ConnectionProperties { source_ip: true }
            ))
        );
        assert_eq!(
            hashes(
                json!({"consistentHash": {"httpQueryParameterName": "user", "maglev": {"tableSize": 1021}}})
            ),
            one(PolicySpecifier::QueryParameter(QueryParameter {
                name: "user".into()
            }))
        );
        assert_eq!(
            hashes(json!({"consistentHash": {"httpCookie": {
                "name": "session", "path": "/app", "ttl": "1h",
                "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]
            }}})),
            one(PolicySpecifier::Cookie(Cookie {
                name: "session".into(),
                ttl: secs(3600),
                path: "/app".into(),
                attributes: vec![
                    CookieAttribute {
                        name: "SameSite".into(),
                        value: "Strict".into()
                    },
                    CookieAttribute {
                        name: "Secure".into(),
                        value: String::new()
                    },
                ],
            }))
        );
        // A session cookie Envoy does not generate: no ttl, no path.
        assert_eq!(
            hashes(json!({"consistentHash": {"httpCookie": {"name": "session"}}})),
            one(PolicySpecifier::Cookie(Cookie {
                name: "session".into(),
                ..Default::default()
            }))
        );
    }

    #[test]
    fn no_hash_policy_without_consistent_hash() {
        assert!(hash_policies(None).is_empty());
        assert!(hashes(json!({"simple": "RANDOM"})).is_empty());
        assert!(hashes(json!({"consistentHash": {"useSourceIp": false}})).is_empty());
        assert!(hashes(json!({"consistentHash": {"minimumRingSize": 10}})).is_empty());
        assert!(hash_policies(Some(&policy(json!({"tls": {"mode": "SIMPLE"}})))).is_empty());
    }

    #[test]
    fn hash_policy_follows_the_effective_policy() {
        let rule = dr(json!({
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-top"}},
                "portLevelSettings": [{"port": {"number": 8080},
                    "loadBalancer": {"consistentHash": {"httpHeaderName": "x-port"}}}]
            },
            "subsets": [{"name": "v1", "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"useSourceIp": true}}}}]
        }));
        let header = |p: Vec<HashPolicy>| match p.first().and_then(|h| h.policy_specifier.clone()) {
            Some(PolicySpecifier::Header(h)) => Some(h.header_name),
            _ => None,
        };
        assert_eq!(
            header(hash_policies(effective_policy(&rule, None, 80).as_ref())).as_deref(),
            Some("x-top")
        );
        assert_eq!(
            header(hash_policies(effective_policy(&rule, None, 8080).as_ref())).as_deref(),
            Some("x-port")
        );
        assert_eq!(
            hash_policies(effective_policy(&rule, Some("v1"), 8080).as_ref()),
            one(PolicySpecifier::ConnectionProperties(
                ConnectionProperties { source_ip: true }
            ))
        );
    }

    // -----------------------------------------------------------------------
    // Real Envoy accepts what apply() builds

    /// A self-signed P-256 certificate (CN and DNS SAN `isthmus-test`, valid until 2126)
    /// and its key: test material only, for Envoy to load from files.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnTCCAUSgAwIBAgIUMxUxcDtITK13fKVroHVCkJVEfmIwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMaXN0aG11cy10ZXN0MCAXDTI2MTEyMzA1NTUzNVoYDzIxMjYx
MDMwMDU1NTM1WjAXMRUwEwYDVQQDDAxpc3RobXVzLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQrbXgN7jx24KedskcohKemVOA3I8QbZqKRnCYvDgNw+Ay+
VoUlpmcYynnXbAnJsiDRjO2xvP6k+YyKzWWZYy24o2wwajAdBgNVHQ4EFgQUevBT
ESPbKzchvAR4MUMs0DlAtegwHwYDVR0jBBgwFoAUevBTESPbKzchvAR4MUMs0DlA
tegwDwYDVR0TAQH/BAUwAwEB/zAXBgNVHREEEDAOggxpc3RobXVzLXRlc3QwCgYI
KoZIzj0EAwIDRwAwRAIgMeWAsO4VQ9JcNDoyircO6l2gNNf9peCZ5yImEnbQyyMC
IFRxgjqBtBi4fkFQ1sWqZ/t8w8IBWDSj+A0WtxAY0vm4
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUzGkbw0KT8elx9Go
dLArlPfSJi7y/fMnMisqqeAuWX6hRANCAAQrbXgN7jx24KedskcohKemVOA3I8Qb
ZqKRnCYvDgNw+Ay+VoUlpmcYynnXbAnJsiDRjO2xvP6k+YyKzWWZYy24
-----END PRIVATE KEY-----
";

    /// Every kind of cluster apply() builds, checked by `envoy --mode validate` (which
    /// also loads the TLS files). Skipped without Envoy, except under CI=true.
    #[test]
    fn envoy_accepts_the_clusters() {
        use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
        use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::{
            DynamicResources, StaticResources,
        };
        use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
        use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
        use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
        use envoy_types::pb::envoy::config::core::v3::{
            Address, ApiConfigSource, GrpcService, Node, SocketAddress, api_config_source::ApiType,
        };
        use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
        use envoy_types::pb::envoy::config::endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
        };

        let Some(envoy) = isthmus_testkit::require_envoy("envoy_accepts_the_clusters") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, TEST_CERT).unwrap();
        std::fs::write(&key, TEST_KEY).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

        let mut cases = vec![
            (json!({}), Protocol::Http),
            (json!({}), Protocol::Grpc),
            (json!({}), Protocol::Tcp),
            (
                json!({"loadBalancer": {"simple": "PASSTHROUGH"}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"simple": "RANDOM"}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"simple": "ROUND_ROBIN", "warmupDurationSecs": "10s"}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"warmup": {"duration": "10s", "aggression": 1.5}}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "ringHash": {"minimumRingSize": 2048}}}}),
                Protocol::Http,
            ),
            (
                json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "maglev": {"tableSize": 65537}}}}),
                Protocol::Http,
            ),
            (
                json!({"connectionPool": {
                    "tcp": {"maxConnections": 5, "connectTimeout": "1s", "maxConnectionDuration": "1h", "idleTimeout": "1h",
                            "tcpKeepalive": {"time": "10s", "interval": "5s", "probes": 3}},
                    "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 2, "maxRequestsPerConnection": 3,
                             "maxRetries": 4, "maxConcurrentStreams": 10}
                }}),
                Protocol::Grpc,
            ),
            (
                json!({"connectionPool": {"http": {"useClientProtocol": true}}}),
                Protocol::Http,
            ),
            (
                json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}),
                Protocol::Http,
            ),
            (
                json!({"outlierDetection": {"consecutive5xxErrors": 3, "consecutiveGatewayErrors": 0, "consecutiveErrors": 2,
                    "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 50, "minHealthPercent": 20,
                    "splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 2}}),
                Protocol::Http,
            ),
            (
                json!({"tls": {"mode": "SIMPLE", "insecureSkipVerify": true}}),
                Protocol::Tls,
            ),
            (
                json!({"tls": {"mode": "SIMPLE", "sni": "isthmus-test", "caCertificates": cert,
                    "subjectAltNames": ["isthmus-test", "spiffe://td/ns/a/sa/b", "10.0.0.1"]}}),
                Protocol::Grpc,
            ),
            (
                json!({"tls": {"mode": "MUTUAL", "clientCertificate": cert, "privateKey": key, "caCertificates": cert}}),
                Protocol::Http,
            ),
        ];
        if std::path::Path::new(SYSTEM_CA_BUNDLE).is_file() {
            cases.push((json!({"tls": {"mode": "SIMPLE"}}), Protocol::Http));
            cases.push((
                json!({"tls": {"mode": "SIMPLE", "credentialName": "c"}}),
                Protocol::Tcp,
            ));
        }
        let mut clusters: Vec<Cluster> = cases
            .into_iter()
            .enumerate()
            .map(|(i, (p, protocol))| {
                let p = policy(p);
                let mut c = eds_cluster(9080);
                c.name = format!("case-{i}");
                apply(
                    &mut c,
                    Some(&p),
                    PortInfo {
                        port: 9080,
                        protocol,
                    },
                    HOST,
                );
                c
            })
            .collect();
        // The ADS server the EDS clusters name.
        let mut xds = Cluster {
            name: "xds".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: secs(1),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: "xds".into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(Address {
                                address: Some(AddressKind::SocketAddress(SocketAddress {
                                    address: "127.0.0.1".into(),
                                    port_specifier: Some(PortSpecifier::PortValue(15010)),
                                    ..Default::default()
                                })),
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(
            &mut xds,
            None,
            PortInfo {
                port: 15010,
                protocol: Protocol::Grpc,
            },
            "xds",
        );
        clusters.push(xds);
        let bootstrap = Bootstrap {
            node: Some(Node {
                id: "sidecar~10.0.0.1~test.default~default.svc.cluster.local".into(),
                cluster: "test".into(),
                ..Default::default()
            }),
            static_resources: Some(StaticResources {
                clusters,
                ..Default::default()
            }),
            dynamic_resources: Some(DynamicResources {
                ads_config: Some(ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: "xds".into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let config = dir.path().join("bootstrap.pb");
        std::fs::write(&config, bootstrap.encode_to_vec()).unwrap();
        let out = std::process::Command::new(&envoy)
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "--log-level",
                "error",
                "-c",
            ])
            .arg(&config)
            .output()
            .expect("running Envoy");
        assert!(
            out.status.success(),
            "Envoy rejected the clusters:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
