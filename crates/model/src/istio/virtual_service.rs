//! `VirtualService`: routing rules for traffic to a set of hosts (networking.istio.io v1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::Destination;
use super::refs::{
    MESH_GATEWAY, binds_mesh, decode_base64, host_subset_of, hosts_overlap, is_authority_header,
    is_known_http_status, jwt_routing_claim, legacy_gateway_name,
};
use super::validate::{
    MILLISECOND, check_duration, check_export_to, check_header_name, check_header_name_case,
    check_labels, check_percent_int, check_percent_value, check_port, check_regex, error,
    is_dns1123_label, is_dns1123_subdomain, is_ip, set_names, validate_fqdn, validate_ip_subnet,
    validate_wildcard_domain, warning,
};
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    /// Hosts the rules apply to; empty for a delegate VirtualService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways (`[namespace/]name`, or `mesh`) the rules apply to; empty means `mesh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP rule: match conditions and what to do with matching requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions (ORed); none means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout, a duration such as `"10s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirrorPercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Deprecated snake_case spelling of `mirrorPercent`, still in the CRD.
    #[serde(
        rename = "mirror_percent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent_legacy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on an HTTP request; all set conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header name (lowercase) to match; an empty match checks presence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A string condition: at most one of `exact`, `prefix` or `regex` (RE2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A weighted HTTP destination, with header changes for requests sent to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    #[serde(default)]
    pub destination: Destination,
    /// Relative weight; with several destinations traffic is split proportionally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted TCP or TLS destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Header changes for requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Headers to set (overwrite), add (append) and remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A reference to a delegate VirtualService (one without hosts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    /// Defaults to the root VirtualService's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An HTTP redirect sent instead of forwarding the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// At most one of `port` and `derivePort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
}

/// How a redirect picks its port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    #[default]
    FromProtocolDefault,
    FromRequestPort,
}

/// A fixed response sent instead of forwarding the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// HTTP status, required.
    #[serde(default)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A response body: at most one of `string` or `bytes` (base64).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Rewrites applied before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex path rewrite: `match` (RE2) replaced by `rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// Retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Comma-separated Envoy retry policies and/or HTTP status codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Faults injected into matching requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A delay fault: one of `fixedDelay` or `exponentialDelay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated: use `percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// An abort fault: one of `httpStatus`, `grpcStatus` or `http2Error`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A percentage, 0.0 to 100.0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// A mirror destination with the share of traffic mirrored to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Cross-origin resource sharing policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Deprecated: use `allowOrigins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What to do with preflight requests that match no allowed origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    #[default]
    Unspecified,
    Forward,
    Ignore,
}

/// A TLS (SNI-based) passthrough rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    /// Required; each entry needs `sniHosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// An opaque TCP rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

// ---------------------------------------------------------------------------
// Validation

/// Envoy retry policies Istio accepts in `retryOn` (besides HTTP status codes).
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names, at the index of their code.
pub const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl ValidateSpec for VirtualService {
    fn validate(&self, ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        // A VirtualService without hosts is a delegate: root VirtualServices hand
        // parts of their HTTP routing to it (Istio's PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE,
        // on by default). Delegates carry HTTP routes only.
        let delegate = self.hosts.is_empty();
        if delegate {
            if !self.gateways.is_empty() {
                error(
                    out,
                    "spec.gateways",
                    "a delegate VirtualService (one without hosts) cannot set gateways; set them on the root VirtualService, or add hosts",
                );
            }
            if !self.tls.is_empty() {
                error(
                    out,
                    "spec.tls",
                    "a delegate VirtualService (one without hosts) can only have http routes; add hosts to use tls routes",
                );
            }
            if !self.tcp.is_empty() {
                error(
                    out,
                    "spec.tcp",
                    "a delegate VirtualService (one without hosts) can only have http routes; add hosts to use tcp routes",
                );
            }
        }

        let applies_to_mesh = binds_mesh(&self.gateways);
        let applies_to_gateway = self.gateways.iter().any(|g| g != MESH_GATEWAY);
        check_gateway_names(out, "spec.gateways", &self.gateways);

        let mut all_hosts_valid = true;
        for (i, h) in self.hosts.iter().enumerate() {
            let f = format!("spec.hosts[{i}]");
            if let Err(e) = validate_wildcard_domain(h) {
                if !is_ip(h) {
                    error(out, f, e);
                    all_hosts_valid = false;
                }
            } else if applies_to_mesh && h == "*" {
                error(
                    out,
                    f,
                    "host \"*\" is not allowed in a VirtualService that applies to the mesh; name the hosts, or bind it to gateways only",
                );
                all_hosts_valid = false;
            }
        }
        if all_hosts_valid {
            for (i, a) in self.hosts.iter().enumerate() {
                if let Some((j, b)) = self.hosts[i + 1..]
                    .iter()
                    .enumerate()
                    .find(|(_, b)| hosts_overlap(a, b))
                {
                    error(
                        out,
                        format!("spec.hosts[{}]", i + 1 + j),
                        format!(
                            "host {b:?} duplicates or overlaps host {a:?} (hosts[{i}]); list each host once"
                        ),
                    );
                }
            }
        }

        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            error(
                out,
                "spec",
                "the VirtualService has no http, tcp or tls routes; add at least one",
            );
        }
        for (i, r) in self.http.iter().enumerate() {
            check_http_route(out, &format!("spec.http[{i}]"), r, delegate);
            if !applies_to_gateway {
                check_no_jwt_claim_routes(out, &format!("spec.http[{i}]"), r);
            }
        }
        warn_unreachable_http_rules(out, &self.http);
        for (i, r) in self.tls.iter().enumerate() {
            check_tls_route(out, &format!("spec.tls[{i}]"), r, &self.hosts);
        }
        for (i, r) in self.tcp.iter().enumerate() {
            check_tcp_route(out, &format!("spec.tcp[{i}]"), r);
        }
        check_export_to(
            out,
            "spec.exportTo",
            ctx.namespace,
            &self.export_to,
            false,
            false,
        );
    }
}

/// Istio's `validateGatewayNames`: `mesh`, `name`, `namespace/name` (or the legacy
/// `name.namespace...` form, with a warning).
fn check_gateway_names(out: &mut Vec<FieldIssue>, field: &str, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match g.split_once('/') {
            None => {
                if let Some((ns, name)) = legacy_gateway_name(g) {
                    warning(
                        out,
                        &f,
                        format!(
                            "gateway {g:?} uses the legacy <name>.<namespace> form; prefer \"{ns}/{name}\""
                        ),
                    );
                }
                if let Err(e) = validate_fqdn(g) {
                    error(
                        out,
                        f,
                        format!(
                            "gateway {g:?} is not valid ({e}); use \"mesh\", \"<name>\" or \"<namespace>/<name>\""
                        ),
                    );
                }
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    error(
                        out,
                        f,
                        format!(
                            "gateway {g:?} has an empty namespace or name; use \"<namespace>/<name>\""
                        ),
                    );
                    continue;
                }
                if !is_dns1123_label(ns) {
                    error(
                        out,
                        &f,
                        format!(
                            "gateway {g:?} has an invalid namespace {ns:?}; use a namespace name"
                        ),
                    );
                }
                if !is_dns1123_label(name) {
                    error(
                        out,
                        &f,
                        format!(
                            "gateway {g:?} has an invalid name {name:?}; gateway names are DNS labels (letters, digits, '-')"
                        ),
                    );
                }
            }
        }
    }
}

/// Istio's `validateStringMatch` / `validateStringMatchRegexp`, plus the CRD's
/// one-of rule. `strict`: empty prefixes and regexes are errors (scheme, method,
/// authority: Envoy rejects them); `empty_ok`: a match setting nothing is fine
/// (headers and query parameters: it checks presence).
fn check_string_match(
    out: &mut Vec<FieldIssue>,
    field: &str,
    sm: &StringMatch,
    strict: bool,
    empty_ok: bool,
) {
    let set = set_names(&[
        ("exact", sm.exact.is_some()),
        ("prefix", sm.prefix.is_some()),
        ("regex", sm.regex.is_some()),
    ]);
    if set.len() > 1 {
        error(
            out,
            field,
            format!(
                "set only one of exact, prefix or regex (found {})",
                set.join(" and ")
            ),
        );
    } else if set.is_empty() && !empty_ok {
        warning(
            out,
            field,
            "the match sets none of exact, prefix or regex, so it matches anything; set one or remove it",
        );
    }
    if strict && sm.prefix.as_deref() == Some("") {
        error(
            out,
            format!("{field}.prefix"),
            "prefix is empty; set a non-empty prefix or remove the match",
        );
    }
    if let Some(re) = &sm.regex
        && (strict || !re.is_empty())
    {
        check_regex(out, format!("{field}.regex"), re);
    }
}

fn check_header_ops(out: &mut Vec<FieldIssue>, field: &str, h: &Headers) {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let names = ops
            .set
            .keys()
            .map(|k| ("set", k))
            .chain(ops.add.keys().map(|k| ("add", k)))
            .chain(ops.remove.iter().map(|k| ("remove", k)));
        for (i, (op, name)) in names.enumerate() {
            let f = if op == "remove" {
                let idx = i - ops.set.len() - ops.add.len();
                format!("{field}.{side}.remove[{idx}]")
            } else {
                format!("{field}.{side}.{op}.{name}")
            };
            // Pseudo-headers such as `:authority` may be set on requests.
            let bare = name.strip_prefix(':').unwrap_or(name);
            if bare.is_empty() {
                error(out, f, "header name is empty; name the header");
            } else if !bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                error(
                    out,
                    f,
                    format!("header name {name:?} is not valid; use letters, digits, '-' and '_'"),
                );
            }
        }
    }
}

/// Checks of the destination of a route, mirror or egress proxy (Istio's
/// `validateDestination`).
pub(crate) fn check_destination(out: &mut Vec<FieldIssue>, field: &str, d: &Destination) {
    let hf = format!("{field}.host");
    if d.host.is_empty() {
        error(
            out,
            hf,
            "destination host is required: a service name such as \"reviews\" or \"reviews.default.svc.cluster.local\"",
        );
    } else if d.host == "*" {
        error(
            out,
            hf,
            "\"*\" is not a valid destination host; name one service",
        );
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        error(out, hf, e);
    }
    if let Some(s) = &d.subset {
        if s.is_empty() {
            error(
                out,
                format!("{field}.subset"),
                "subset is empty; name a subset of the host's DestinationRule, or remove the field",
            );
        } else if !is_dns1123_label(s) {
            error(
                out,
                format!("{field}.subset"),
                format!(
                    "subset name {s:?} is not valid; use letters, digits and '-' (at most 63 characters)"
                ),
            );
        }
    }
    if let Some(p) = &d.port {
        match p.number {
            None | Some(0) => error(
                out,
                format!("{field}.port.number"),
                "port number is required when port is set; use the service port, e.g. 9080",
            ),
            Some(n) => check_port(out, format!("{field}.port.number"), n),
        }
    }
}

/// Istio's `validateRouteDestinations` / `validateHTTPRouteDestinations`: every
/// destination valid, no negative weights, and not all weights zero.
///
/// Istio used to require weights to sum to 100; current Istio accepts any total and
/// Envoy splits traffic in proportion to the weights (the sum is Envoy's total
/// weight), so a total other than 100 is only worth a warning.
fn check_weighted_destinations(
    out: &mut Vec<FieldIssue>,
    field: &str,
    dests: &[(&Destination, Option<i32>)],
) {
    let mut total: i64 = 0;
    for (j, (d, w)) in dests.iter().enumerate() {
        let f = format!("{field}[{j}]");
        check_destination(out, &format!("{f}.destination"), d);
        if let Some(w) = *w {
            if w < 0 {
                error(
                    out,
                    format!("{f}.weight"),
                    format!("weight {w} is negative; use 0 or more"),
                );
            } else {
                total += i64::from(w);
            }
        }
    }
    if dests.len() > 1 {
        if total == 0 {
            error(
                out,
                field,
                format!(
                    "the total weight of the {} destinations is 0; give at least one of them a positive weight",
                    dests.len()
                ),
            );
        } else if total != 100 {
            warning(
                out,
                field,
                format!("weights sum to {total}, not 100; traffic is split proportionally"),
            );
        }
    }
}

fn check_http_route(out: &mut Vec<FieldIssue>, p: &str, r: &HttpRoute, delegate_vs: bool) {
    // What the rule does with a request.
    if let Some(d) = &r.delegate {
        let dp = format!("{p}.delegate");
        if delegate_vs {
            error(
                out,
                &dp,
                "a delegate VirtualService (one without hosts) cannot delegate again; only root VirtualServices can set delegate",
            );
        }
        for (name, set) in [
            ("route", !r.route.is_empty()),
            ("redirect", r.redirect.is_some()),
            ("directResponse", r.direct_response.is_some()),
        ] {
            if set {
                error(
                    out,
                    format!("{p}.{name}"),
                    format!(
                        "a rule with delegate cannot also set {name}; the delegate VirtualService does the routing"
                    ),
                );
            }
        }
        if d.name.is_empty() {
            error(
                out,
                format!("{dp}.name"),
                "delegate.name is required: the name of the delegate VirtualService",
            );
        } else if !is_dns1123_subdomain(&d.name) {
            error(
                out,
                format!("{dp}.name"),
                format!(
                    "delegate name {:?} is not a valid VirtualService name",
                    d.name
                ),
            );
        }
        if let Some(ns) = &d.namespace
            && !is_dns1123_label(ns)
        {
            error(
                out,
                format!("{dp}.namespace"),
                format!("delegate namespace {ns:?} is not a valid namespace name"),
            );
        }
    } else {
        if let Some(_rd) = &r.redirect {
            if !r.route.is_empty() {
                error(
                    out,
                    format!("{p}.redirect"),
                    "a rule cannot set both route and redirect; keep one",
                );
            }
            if r.fault.is_some() {
                error(
                    out,
                    format!("{p}.fault"),
                    "a rule cannot set both fault and redirect; faults apply only to routed requests",
                );
            }
            if r.rewrite.is_some() {
                error(
                    out,
                    format!("{p}.rewrite"),
                    "a rule cannot set both rewrite and redirect; use redirect.uri / redirect.authority instead",
                );
            }
        }
        if r.direct_response.is_some() {
            for (name, set) in [
                ("route", !r.route.is_empty()),
                ("fault", r.fault.is_some()),
                ("rewrite", r.rewrite.is_some()),
                ("redirect", r.redirect.is_some()),
            ] {
                if set {
                    error(
                        out,
                        format!("{p}.directResponse"),
                        format!("a rule cannot set both directResponse and {name}; keep one"),
                    );
                }
            }
        }
        if r.route.is_empty() && r.redirect.is_none() && r.direct_response.is_none() {
            error(
                out,
                p,
                "the rule does nothing: set one of route, redirect, directResponse or delegate",
            );
        }
    }

    for (k, m) in r.r#match.iter().enumerate() {
        check_http_match(out, &format!("{p}.match[{k}]"), m);
    }

    let dests: Vec<(&Destination, Option<i32>)> =
        r.route.iter().map(|d| (&d.destination, d.weight)).collect();
    check_weighted_destinations(out, &format!("{p}.route"), &dests);
    for (j, d) in r.route.iter().enumerate() {
        if let Some(h) = &d.headers {
            check_header_ops(out, &format!("{p}.route[{j}].headers"), h);
        }
    }
    if let Some(h) = &r.headers {
        check_header_ops(out, &format!("{p}.headers"), h);
    }

    if let Some(c) = &r.cors_policy {
        check_cors(out, &format!("{p}.corsPolicy"), c);
    }
    if let Some(f) = &r.fault {
        check_fault(out, &format!("{p}.fault"), f);
    }
    if let Some(d) = &r.direct_response {
        check_direct_response(out, &format!("{p}.directResponse"), d);
    }

    // Mirroring.
    if let Some(m) = &r.mirror {
        if !r.mirrors.is_empty() {
            error(
                out,
                format!("{p}.mirror"),
                "set either mirror or mirrors, not both; move the mirror into mirrors",
            );
        }
        check_destination(out, &format!("{p}.mirror"), m);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        let mp = format!("{p}.mirrors[{k}]");
        check_destination(out, &format!("{mp}.destination"), &m.destination);
        if let Some(v) = m.percentage.as_ref().and_then(|x| x.value) {
            check_percent_value(out, format!("{mp}.percentage.value"), v);
        }
    }
    if let Some(v) = r.mirror_percentage.as_ref().and_then(|x| x.value) {
        check_percent_value(out, format!("{p}.mirrorPercentage.value"), v);
    }
    for (name, v) in [
        ("mirrorPercent", r.mirror_percent),
        ("mirror_percent", r.mirror_percent_legacy),
    ] {
        if let Some(v) = v {
            check_percent_int(out, format!("{p}.{name}"), i64::from(v));
        }
    }

    if let Some(rd) = &r.redirect {
        check_redirect(out, &format!("{p}.redirect"), rd);
    }
    if let Some(rt) = &r.retries {
        check_retries(out, &format!("{p}.retries"), rt);
    }
    if let Some(rw) = &r.rewrite {
        check_rewrite(out, &format!("{p}.rewrite"), rw, r.headers.as_ref());
    }
    check_duration(out, format!("{p}.timeout"), r.timeout.as_ref(), MILLISECOND);
}

fn check_http_match(out: &mut Vec<FieldIssue>, mp: &str, m: &HttpMatchRequest) {
    if let Some(sm) = &m.uri {
        // Envoy accepts an empty URI prefix (it matches everything).
        check_string_match(out, &format!("{mp}.uri"), sm, false, false);
    }
    for (name, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(out, &format!("{mp}.{name}"), sm, true, false);
        }
    }
    for (name, sm) in &m.headers {
        let f = format!("{mp}.headers.{name}");
        if jwt_routing_claim(name).is_none() {
            check_header_name(out, &f, name);
        }
        check_string_match(out, &f, sm, false, true);
    }
    for (name, sm) in &m.without_headers {
        let f = format!("{mp}.withoutHeaders.{name}");
        if jwt_routing_claim(name).is_none() {
            check_header_name(out, &f, name);
        }
        // `regex: "*"` is not a regex: Istio turns it into a presence match.
        if sm.regex.as_deref() == Some("*") {
            continue;
        }
        check_string_match(out, &f, sm, false, true);
    }
    for (name, sm) in &m.query_params {
        let f = format!("{mp}.queryParams.{name}");
        if name.is_empty() {
            error(out, &f, "query parameter name is empty; name the parameter");
        }
        check_string_match(out, &f, sm, false, true);
    }
    if let Some(port) = m.port
        && port != 0
    {
        check_port(out, format!("{mp}.port"), port);
    }
    check_labels(out, &format!("{mp}.sourceLabels"), &m.source_labels);
    check_gateway_names(out, &format!("{mp}.gateways"), &m.gateways);
    check_source_namespace(out, mp, m.source_namespace.as_deref());
}

fn check_source_namespace(out: &mut Vec<FieldIssue>, mp: &str, ns: Option<&str>) {
    if let Some(ns) = ns
        && !ns.is_empty()
        && !is_dns1123_label(ns)
    {
        error(
            out,
            format!("{mp}.sourceNamespace"),
            format!("sourceNamespace {ns:?} is not a valid namespace name"),
        );
    }
}

/// JWT-claim routing (`@request.auth.claims.*` header matches) works only on gateways.
fn check_no_jwt_claim_routes(out: &mut Vec<FieldIssue>, p: &str, r: &HttpRoute) {
    for (k, m) in r.r#match.iter().enumerate() {
        for (key, name) in m
            .headers
            .keys()
            .map(|n| ("headers", n))
            .chain(m.without_headers.keys().map(|n| ("withoutHeaders", n)))
        {
            if jwt_routing_claim(name).is_some() {
                error(
                    out,
                    format!("{p}.match[{k}].{key}.{name}"),
                    "JWT claim based routing is supported only on gateways; bind this VirtualService to a gateway or match a real header",
                );
            }
        }
    }
}

fn check_cors(out: &mut Vec<FieldIssue>, cp: &str, c: &CorsPolicy) {
    for (k, o) in c.allow_origins.iter().enumerate() {
        let f = format!("{cp}.allowOrigins[{k}]");
        let value = o.exact.as_ref().or(o.prefix.as_ref()).or(o.regex.as_ref());
        if value.is_none_or(|v| v.is_empty()) {
            error(
                out,
                &f,
                "an allowed origin needs a non-empty exact, prefix or regex",
            );
            continue;
        }
        check_string_match(out, &f, o, false, false);
    }
    for (k, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            error(
                out,
                format!("{cp}.allowMethods[{k}]"),
                format!(
                    "{m:?} is not a supported HTTP method; use one of {}",
                    CORS_METHODS.join(", ")
                ),
            );
        }
    }
    for (list, name) in [
        (&c.allow_headers, "allowHeaders"),
        (&c.expose_headers, "exposeHeaders"),
    ] {
        for (k, h) in list.iter().enumerate() {
            if h != "*" {
                check_header_name_case(out, format!("{cp}.{name}[{k}]"), h, false);
            }
        }
    }
    if let Some(age) = &c.max_age {
        let f = format!("{cp}.maxAge");
        match super::validate::validate_duration(&f, age, MILLISECOND) {
            Some(issue) => out.push(issue),
            None => {
                let nanos = super::validate::parse_duration_nanos(age).unwrap_or(0);
                if nanos % 1_000_000_000 != 0 {
                    error(
                        out,
                        f,
                        format!(
                            "maxAge {age:?} is not a whole number of seconds; CORS max age has seconds precision"
                        ),
                    );
                }
            }
        }
    }
}

fn check_fault(out: &mut Vec<FieldIssue>, fp: &str, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        error(
            out,
            fp,
            "fault needs a delay and/or an abort; add one or remove fault",
        );
    }
    if let Some(d) = &f.delay {
        let dp = format!("{fp}.delay");
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(_), Some(_)) => error(out, &dp, "set only one of fixedDelay or exponentialDelay"),
            (None, None) => error(out, &dp, "delay needs fixedDelay, e.g. \"5s\""),
            _ => {}
        }
        check_duration(
            out,
            format!("{dp}.fixedDelay"),
            d.fixed_delay.as_ref(),
            MILLISECOND,
        );
        if d.exponential_delay.is_some() {
            check_duration(
                out,
                format!("{dp}.exponentialDelay"),
                d.exponential_delay.as_ref(),
                MILLISECOND,
            );
            error(
                out,
                format!("{dp}.exponentialDelay"),
                "exponentialDelay is not supported yet; use fixedDelay",
            );
        }
        if let Some(v) = d.percentage.as_ref().and_then(|x| x.value) {
            check_percent_value(out, format!("{dp}.percentage.value"), v);
        }
        if let Some(v) = d.percent {
            check_percent_int(out, format!("{dp}.percent"), i64::from(v));
        }
    }
    if let Some(a) = &f.abort {
        let ap = format!("{fp}.abort");
        let set = set_names(&[
            ("httpStatus", a.http_status.is_some()),
            ("grpcStatus", a.grpc_status.is_some()),
            ("http2Error", a.http2_error.is_some()),
        ]);
        if set.len() > 1 {
            error(
                out,
                &ap,
                format!(
                    "set only one of httpStatus, grpcStatus or http2Error (found {})",
                    set.join(" and ")
                ),
            );
        } else if set.is_empty() {
            error(
                out,
                &ap,
                "abort needs httpStatus (e.g. 503) or grpcStatus (e.g. \"UNAVAILABLE\")",
            );
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            error(
                out,
                format!("{ap}.httpStatus"),
                format!("HTTP status {s} is not between 200 and 599"),
            );
        }
        if let Some(s) = &a.grpc_status
            && !GRPC_STATUSES.contains(&s.as_str())
        {
            error(
                out,
                format!("{ap}.grpcStatus"),
                format!(
                    "gRPC status {s:?} is not a gRPC status code name; use e.g. \"UNAVAILABLE\" or \"NOT_FOUND\""
                ),
            );
        }
        if a.http2_error.is_some() {
            error(
                out,
                format!("{ap}.http2Error"),
                "http2Error aborts are not supported yet; use httpStatus or grpcStatus",
            );
        }
        if let Some(v) = a.percentage.as_ref().and_then(|x| x.value) {
            check_percent_value(out, format!("{ap}.percentage.value"), v);
        }
    }
}

fn check_direct_response(out: &mut Vec<FieldIssue>, dp: &str, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        error(
            out,
            format!("{dp}.status"),
            format!(
                "status {} is not an HTTP status between 200 and 599; set status",
                d.status
            ),
        );
    }
    let Some(body) = &d.body else { return };
    let bp = format!("{dp}.body");
    if body.string.is_some() && body.bytes.is_some() {
        error(out, &bp, "set only one of string or bytes");
    }
    let size = match (&body.string, &body.bytes) {
        (Some(s), _) => s.len(),
        (None, Some(b)) => {
            if decode_base64(b).is_none() {
                error(
                    out,
                    format!("{bp}.bytes"),
                    "bytes is not valid base64; encode the body with base64, or use string",
                );
            }
            b.len() / 4 * 3
        }
        (None, None) => 0,
    };
    if size > 1024 * 1024 {
        error(
            out,
            &bp,
            "the body is larger than 1MB; large direct responses hurt control plane performance, serve it from a backend",
        );
    } else if size > 100 * 1024 {
        warning(
            out,
            &bp,
            "the body is larger than 100KB; large direct responses may hurt control plane performance",
        );
    }
}

fn check_redirect(out: &mut Vec<FieldIssue>, rp: &str, rd: &HttpRedirect) {
    if rd.uri.is_none()
        && rd.authority.is_none()
        && rd.port.is_none()
        && rd.derive_port.is_none()
        && rd.scheme.is_none()
        && rd.prefix_rewrite.is_none()
    {
        error(
            out,
            rp,
            "redirect must set at least one of uri, authority, scheme, port, derivePort or prefixRewrite",
        );
    }
    if rd.port.is_some() && rd.derive_port.is_some() {
        error(out, rp, "set only one of port or derivePort");
    }
    if let Some(port) = rd.port {
        check_port(out, format!("{rp}.port"), port);
    }
    if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
        warning(
            out,
            rp,
            "uri and prefixRewrite both rewrite the path; set only one of them",
        );
    }
    if let Some(code) = rd.redirect_code
        && !matches!(code, 301 | 302 | 303 | 307 | 308)
    {
        error(
            out,
            format!("{rp}.redirectCode"),
            format!("redirect code {code} is not supported; use 301, 302, 303, 307 or 308"),
        );
    }
    if let Some(s) = &rd.scheme
        && s != "http"
        && s != "https"
    {
        error(
            out,
            format!("{rp}.scheme"),
            format!("redirect scheme {s:?} is not valid; use \"http\" or \"https\""),
        );
    }
}

fn check_retries(out: &mut Vec<FieldIssue>, rp: &str, rt: &HttpRetry) {
    let attempts = rt.attempts.unwrap_or(0);
    if attempts < 0 {
        error(
            out,
            format!("{rp}.attempts"),
            format!("attempts {attempts} is negative; use 0 (no retries) or more"),
        );
    }
    if attempts == 0
        && (rt.per_try_timeout.is_some()
            || rt.retry_on.is_some()
            || rt.retry_remote_localities.is_some())
    {
        warning(
            out,
            format!("{rp}.attempts"),
            "attempts is 0, which disables retries, so the other retry settings have no effect; set attempts",
        );
    }
    check_duration(
        out,
        format!("{rp}.perTryTimeout"),
        rt.per_try_timeout.as_ref(),
        MILLISECOND,
    );
    check_duration(
        out,
        format!("{rp}.backoff"),
        rt.backoff.as_ref(),
        MILLISECOND,
    );
    if let Some(on) = &rt.retry_on {
        for policy in on.split(',') {
            let policy = policy.trim();
            let known = RETRY_ON_POLICIES.contains(&policy)
                || policy.parse::<u32>().is_ok_and(is_known_http_status);
            if !known {
                error(
                    out,
                    format!("{rp}.retryOn"),
                    format!(
                        "{policy:?} is not a valid retryOn policy; use Envoy retry policies (e.g. \"5xx\", \"connect-failure\", \"gateway-error\") or HTTP status codes, separated by commas"
                    ),
                );
            }
        }
    }
}

fn check_rewrite(out: &mut Vec<FieldIssue>, wp: &str, rw: &HttpRewrite, headers: Option<&Headers>) {
    if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
        error(out, wp, "set only one of uri or uriRegexRewrite");
    }
    if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
        error(
            out,
            wp,
            "rewrite must set uri, uriRegexRewrite or authority",
        );
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        let rp = format!("{wp}.uriRegexRewrite");
        match (&rr.r#match, &rr.rewrite) {
            (Some(m), Some(_)) if !m.is_empty() => check_regex(out, format!("{rp}.match"), m),
            _ => error(
                out,
                &rp,
                "uriRegexRewrite needs both match (a regex) and rewrite",
            ),
        }
    }
    // Istio's validateAuthorityRewrite: the authority may be set only once.
    let request = headers.and_then(|h| h.request.as_ref());
    let header_sets = request
        .into_iter()
        .flat_map(|r| r.set.keys().chain(r.add.keys()))
        .filter(|k| is_authority_header(k))
        .count();
    if rw.authority.is_some() && header_sets > 0 {
        error(
            out,
            format!("{wp}.authority"),
            "the authority is rewritten here and also set in headers.request; set it in one place only",
        );
    }
}

fn check_tls_route(out: &mut Vec<FieldIssue>, tp: &str, r: &TlsRoute, vs_hosts: &[String]) {
    if r.r#match.is_empty() {
        error(
            out,
            format!("{tp}.match"),
            "a TLS route needs at least one match with sniHosts",
        );
    }
    for (k, m) in r.r#match.iter().enumerate() {
        let mp = format!("{tp}.match[{k}]");
        if m.sni_hosts.is_empty() {
            error(
                out,
                format!("{mp}.sniHosts"),
                "sniHosts is required: list the SNI host names this route matches",
            );
        }
        for (s, sni) in m.sni_hosts.iter().enumerate() {
            let f = format!("{mp}.sniHosts[{s}]");
            if let Err(e) = validate_wildcard_domain(sni) {
                if is_ip(sni) {
                    warning(
                        out,
                        f,
                        format!(
                            "SNI host {sni:?} is an IP address; the SNI spec forbids that and most clients never send one"
                        ),
                    );
                } else {
                    error(out, f, e);
                }
            } else if !vs_hosts.iter().any(|h| host_subset_of(sni, h)) {
                error(
                    out,
                    f,
                    format!(
                        "SNI host {sni:?} is not covered by any host of the VirtualService [{}]; add it to hosts or narrow it",
                        vs_hosts.join(", ")
                    ),
                );
            }
        }
        check_subnets(
            out,
            &format!("{mp}.destinationSubnets"),
            &m.destination_subnets,
        );
        if let Some(port) = m.port
            && port != 0
        {
            check_port(out, format!("{mp}.port"), port);
        }
        check_labels(out, &format!("{mp}.sourceLabels"), &m.source_labels);
        check_gateway_names(out, &format!("{mp}.gateways"), &m.gateways);
        check_source_namespace(out, &mp, m.source_namespace.as_deref());
    }
    if r.route.is_empty() {
        error(
            out,
            format!("{tp}.route"),
            "a TLS route needs at least one route destination",
        );
    }
    let dests: Vec<(&Destination, Option<i32>)> =
        r.route.iter().map(|d| (&d.destination, d.weight)).collect();
    check_weighted_destinations(out, &format!("{tp}.route"), &dests);
}

fn check_tcp_route(out: &mut Vec<FieldIssue>, tp: &str, r: &TcpRoute) {
    for (k, m) in r.r#match.iter().enumerate() {
        let mp = format!("{tp}.match[{k}]");
        check_subnets(
            out,
            &format!("{mp}.destinationSubnets"),
            &m.destination_subnets,
        );
        if let Some(s) = &m.source_subnet
            && !s.is_empty()
            && let Err(e) = validate_ip_subnet(s)
        {
            error(out, format!("{mp}.sourceSubnet"), e);
        }
        if let Some(port) = m.port
            && port != 0
        {
            check_port(out, format!("{mp}.port"), port);
        }
        check_labels(out, &format!("{mp}.sourceLabels"), &m.source_labels);
        check_gateway_names(out, &format!("{mp}.gateways"), &m.gateways);
        check_source_namespace(out, &mp, m.source_namespace.as_deref());
    }
    if r.route.is_empty() {
        error(
            out,
            format!("{tp}.route"),
            "a TCP route needs at least one route destination",
        );
    }
    let dests: Vec<(&Destination, Option<i32>)> =
        r.route.iter().map(|d| (&d.destination, d.weight)).collect();
    check_weighted_destinations(out, &format!("{tp}.route"), &dests);
}

fn check_subnets(out: &mut Vec<FieldIssue>, field: &str, subnets: &[String]) {
    for (i, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            error(out, format!("{field}[{i}]"), e);
        }
    }
}

/// Istio's `analyzeUnreachableHTTPRules` (warnings): a rule after a rule without
/// matches is never used, and so is a rule whose every match repeats an earlier one.
fn warn_unreachable_http_rules(out: &mut Vec<FieldIssue>, routes: &[HttpRoute]) {
    let mut catch_all: Option<usize> = None;
    let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(j) = catch_all {
            warning(
                out,
                format!("spec.http[{i}]"),
                format!(
                    "this rule is never used: http[{j}] has no match and takes every request first; only the last rule can have no match"
                ),
            );
        }
        if r.r#match.is_empty() {
            catch_all.get_or_insert(i);
            continue;
        }
        let mut duplicates = 0;
        for (k, m) in r.r#match.iter().enumerate() {
            let key = HttpMatchRequest {
                name: None,
                ..m.clone()
            };
            if let Some((_, j)) = seen.iter().find(|(s, _)| *s == key) {
                duplicates += 1;
                warning(
                    out,
                    format!("spec.http[{i}].match[{k}]"),
                    format!(
                        "this match is ineffective: http[{j}] has the same match and takes these requests first"
                    ),
                );
            } else {
                seen.push((key, i));
            }
        }
        if catch_all.is_none() && duplicates == r.r#match.len() {
            warning(
                out,
                format!("spec.http[{i}]"),
                "this rule is never used: all its matches repeat earlier rules",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Level::{Error, Warning};
    use crate::istio::testing::{assert_clean, assert_issue, check, check_yaml};

    const KIND: &str = "VirtualService";

    #[test]
    fn a_simple_route_is_clean() {
        let d = check(
            KIND,
            "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn empty_hosts_make_a_delegate_without_gateways_tls_or_tcp() {
        let d = check(
            KIND,
            "gateways: [gw]\nhttp:\n- route:\n  - destination: {host: reviews}\ntcp:\n- route:\n  - destination: {host: db}\n",
        );
        assert_issue(&d, Error, "spec.gateways", "delegate");
        assert_issue(&d, Error, "spec.tcp", "only have http routes");
        let d = check(KIND, "http:\n- route:\n  - destination: {host: reviews}\n");
        assert_clean(&d);
    }

    #[test]
    fn no_routes_at_all() {
        let d = check(KIND, "hosts: [reviews]\n");
        assert_issue(&d, Error, "spec", "no http, tcp or tls routes");
    }

    #[test]
    fn host_rules() {
        let d = check(
            KIND,
            "hosts: [\"*\", \"bad_host\", reviews, reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.hosts[0]",
            "not allowed in a VirtualService that applies to the mesh",
        );
        assert_issue(&d, Error, "spec.hosts[1]", "\"bad_host\"");
        // Duplicates are checked only once every host is valid.
        let d = check(
            KIND,
            "hosts: [reviews, \"*.example.com\", a.example.com]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.hosts[2]",
            "overlaps host \"*.example.com\"",
        );
        // `*` is fine on a gateway-only VirtualService; IPs are fine hosts.
        let d = check(
            KIND,
            "hosts: [\"*\"]\ngateways: [istio-system/gw]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        );
        assert_clean(&d);
        let d = check(
            KIND,
            "hosts: [10.0.0.1]\ntcp:\n- route:\n  - destination: {host: db}\n",
        );
        assert_clean(&d);
    }

    #[test]
    fn gateway_names() {
        let d = check(
            KIND,
            "hosts: [a.com]\ngateways: [mesh, \"ns/\", \"Bad_Gw\", gw.istio-system, \"ns/gw.x\"]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        );
        assert_issue(&d, Error, "spec.gateways[1]", "empty namespace or name");
        assert_issue(&d, Error, "spec.gateways[2]", "\"Bad_Gw\"");
        assert_issue(&d, Warning, "spec.gateways[3]", "\"istio-system/gw\"");
        assert_issue(&d, Error, "spec.gateways[4]", "invalid name");
    }

    #[test]
    fn a_rule_needs_an_action_and_route_excludes_redirect() {
        let d = check(KIND, "hosts: [r]\nhttp:\n- timeout: 5s\n");
        assert_issue(
            &d,
            Error,
            "spec.http[0]",
            "route, redirect, directResponse or delegate",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- redirect: {uri: /x}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].redirect",
            "both route and redirect",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- directResponse: {status: 200}\n  redirect: {uri: /x}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].directResponse",
            "directResponse and redirect",
        );
    }

    #[test]
    fn destinations_need_hosts_and_valid_ports() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {subset: v1, port: {number: 70000}}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].route[0].destination.host",
            "host is required",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].route[0].destination.port.number",
            "70000",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: \"v1.0\"}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].route[0].destination.subset",
            "\"v1.0\"",
        );
    }

    #[test]
    fn weights() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n    weight: -10\n  - destination: {host: r, subset: v2}\n    weight: 110\n",
        );
        assert_issue(&d, Error, "spec.http[0].route[0].weight", "negative");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n  - destination: {host: r, subset: v2}\n",
        );
        assert_issue(&d, Error, "spec.http[0].route", "total weight");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n    weight: 1\n  - destination: {host: r, subset: v2}\n    weight: 3\n",
        );
        assert_issue(
            &d,
            Warning,
            "spec.http[0].route",
            "weights sum to 4, not 100",
        );
        assert!(!d.iter().any(|x| x.level == Error), "{d:#?}");
        // One destination: its weight does not matter.
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n    weight: 30\n",
        );
        assert_clean(&d);
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn timeouts_and_retries() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- timeout: 10\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].timeout", "invalid type");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- timeout: 5 s\n  retries: {attempts: -1, perTryTimeout: 0.1ms, retryOn: \"5xx,bogus,503\"}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].timeout", "not a valid duration");
        assert_issue(&d, Error, "spec.http[0].retries.attempts", "negative");
        assert_issue(
            &d,
            Error,
            "spec.http[0].retries.perTryTimeout",
            "minimum of 1ms",
        );
        assert_issue(&d, Error, "spec.http[0].retries.retryOn", "\"bogus\"");
        assert_eq!(
            d.iter()
                .filter(|x| x.field.as_deref() == Some("spec.http[0].retries.retryOn"))
                .count(),
            1,
            "{d:#?}"
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- timeout: 1h30m\n  retries: {attempts: 3, perTryTimeout: 2s, retryOn: \"gateway-error,connect-failure,refused-stream\"}\n  route:\n  - destination: {host: r}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- retries: {attempts: 0, retryOn: 5xx}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Warning,
            "spec.http[0].retries.attempts",
            "disables retries",
        );
    }

    #[test]
    fn faults() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- fault: {}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].fault", "delay and/or an abort");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- fault:\n    abort: {httpStatus: 700, percentage: {value: 120}}\n    delay: {percentage: {value: 50}}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].fault.abort.httpStatus", "700");
        assert_issue(
            &d,
            Error,
            "spec.http[0].fault.abort.percentage.value",
            "120",
        );
        assert_issue(&d, Error, "spec.http[0].fault.delay", "fixedDelay");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- fault:\n    abort: {grpcStatus: NOPE}\n    delay: {fixedDelay: 0s}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].fault.abort.grpcStatus", "\"NOPE\"");
        assert_issue(
            &d,
            Error,
            "spec.http[0].fault.delay.fixedDelay",
            "minimum of 1ms",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- fault:\n    abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].fault.abort", "only one of");
    }

    #[test]
    fn mirrors() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- mirror: {subset: v2}\n  mirrorPercentage: {value: 101}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].mirror.host", "host is required");
        assert_issue(&d, Error, "spec.http[0].mirrorPercentage.value", "101");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- mirror: {host: m}\n  mirrors:\n  - destination: {host: m2}\n    percentage: {value: -1}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].mirror", "not both");
        assert_issue(&d, Error, "spec.http[0].mirrors[0].percentage.value", "-1");
    }

    #[test]
    fn rewrites_and_redirects() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- rewrite: {uri: /a, uriRegexRewrite: {match: \"^/b\", rewrite: /c}}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].rewrite",
            "only one of uri or uriRegexRewrite",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- rewrite: {uriRegexRewrite: {match: \"(/b\", rewrite: /c}}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "unclosed group",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- redirect: {uri: /new, redirectCode: 304, scheme: ftp, port: 8080, derivePort: FROM_REQUEST_PORT}\n",
        );
        assert_issue(&d, Error, "spec.http[0].redirect.redirectCode", "304");
        assert_issue(&d, Error, "spec.http[0].redirect.scheme", "\"ftp\"");
        assert_issue(
            &d,
            Error,
            "spec.http[0].redirect",
            "only one of port or derivePort",
        );
        let d = check(KIND, "hosts: [r]\nhttp:\n- redirect: {redirectCode: 302}\n");
        assert_issue(&d, Error, "spec.http[0].redirect", "at least one of");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- rewrite: {authority: new}\n  headers: {request: {set: {Host: other}}}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].rewrite.authority",
            "one place only",
        );
    }

    #[test]
    fn string_matches_and_regexes() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- match:\n  - uri: {prefix: /a, exact: /b}\n    headers:\n      x-user: {regex: \"(abc\"}\n      \"Bad Header\": {exact: x}\n      X-Upper: {exact: y}\n      x-present: {}\n    queryParams:\n      q: {regex: \"[\"}\n    method: {prefix: \"\"}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].uri",
            "only one of exact, prefix or regex",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].headers.x-user.regex",
            "regex \"(abc\" is not valid: unclosed group; fix the pattern (RE2 syntax)",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].headers.Bad Header",
            "not valid",
        );
        assert_issue(
            &d,
            Warning,
            "spec.http[0].match[0].headers.X-Upper",
            "\"x-upper\"",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].queryParams.q.regex",
            "unclosed character class",
        );
        assert_issue(&d, Error, "spec.http[0].match[0].method.prefix", "empty");
        assert!(
            !d.iter()
                .any(|x| x.field.as_deref() == Some("spec.http[0].match[0].headers.x-present")),
            "{d:#?}"
        );
    }

    #[test]
    fn match_ports_labels_namespaces() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- match:\n  - port: 99999\n    sourceLabels: {\"bad key!\": v}\n    sourceNamespace: Not_A_Namespace\n    gateways: [\"/x\"]\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].match[0].port", "99999");
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].sourceLabels.bad key!",
            "label key",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].sourceNamespace",
            "namespace",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].gateways[0]",
            "empty namespace",
        );
    }

    #[test]
    fn cors() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- corsPolicy:\n    allowOrigins: [{regex: \"*.example.com\"}, {}]\n    allowMethods: [GET, FETCH]\n    allowHeaders: [\"*\", \"bad header\"]\n    maxAge: 1500ms\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].corsPolicy.allowOrigins[0].regex",
            "repetition operator missing expression",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].corsPolicy.allowOrigins[1]",
            "non-empty exact, prefix or regex",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].corsPolicy.allowMethods[1]",
            "\"FETCH\"",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].corsPolicy.allowHeaders[1]",
            "not valid",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].corsPolicy.maxAge",
            "whole number of seconds",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- corsPolicy:\n    allowOrigins: [{exact: \"https://example.com\"}]\n    allowHeaders: [X-Foo-Bar]\n    maxAge: 24h\n  route:\n  - destination: {host: r}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn direct_responses() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- directResponse: {body: {string: hi, bytes: \"aGk=\"}}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].directResponse.status",
            "set status",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].directResponse.body",
            "only one of string or bytes",
        );
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- directResponse: {status: 503, body: {bytes: \"not base64!\"}}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].directResponse.body.bytes",
            "base64",
        );
    }

    #[test]
    fn delegates() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- delegate: {namespace: ns}\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.http[0].delegate.name", "required");
        assert_issue(&d, Error, "spec.http[0].route", "cannot also set route");
        let d = check(KIND, "http:\n- delegate: {name: other}\n");
        assert_issue(&d, Error, "spec.http[0].delegate", "cannot delegate again");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- delegate: {name: reviews-delegate, namespace: ns}\n",
        );
        assert_clean(&d);
    }

    #[test]
    fn tls_routes() {
        let d = check(
            KIND,
            "hosts: [\"*.example.com\"]\ntls:\n- route:\n  - destination: {host: r}\n- match:\n  - port: 443\n  route:\n  - destination: {host: r}\n- match:\n  - sniHosts: [a.example.com, other.org, 10.0.0.1]\n    destinationSubnets: [10.0.0.0/33]\n",
        );
        assert_issue(&d, Error, "spec.tls[0].match", "at least one match");
        assert_issue(&d, Error, "spec.tls[1].match[0].sniHosts", "required");
        assert_issue(
            &d,
            Error,
            "spec.tls[2].match[0].sniHosts[1]",
            "\"other.org\" is not covered",
        );
        assert_issue(
            &d,
            Warning,
            "spec.tls[2].match[0].sniHosts[2]",
            "IP address",
        );
        assert_issue(
            &d,
            Error,
            "spec.tls[2].match[0].destinationSubnets[0]",
            "CIDR",
        );
        assert_issue(&d, Error, "spec.tls[2].route", "at least one route");
        assert!(
            !d.iter()
                .any(|x| x.field.as_deref() == Some("spec.tls[2].match[0].sniHosts[0]")),
            "{d:#?}"
        );
    }

    #[test]
    fn tcp_routes() {
        let d = check(
            KIND,
            "hosts: [db]\ntcp:\n- match:\n  - port: 0\n    sourceSubnet: nope\n- route:\n  - destination: {host: db, port: {number: 3306}}\n    weight: -1\n",
        );
        assert_issue(&d, Error, "spec.tcp[0].match[0].sourceSubnet", "\"nope\"");
        assert_issue(&d, Error, "spec.tcp[0].route", "at least one route");
        assert_issue(&d, Error, "spec.tcp[1].route[0].weight", "negative");
    }

    #[test]
    fn jwt_claim_routes_need_a_gateway() {
        let spec = "http:\n- match:\n  - headers:\n      \"@request.auth.claims.group\": {exact: admin}\n  route:\n  - destination: {host: r}\n";
        let d = check(KIND, &format!("hosts: [r]\n{spec}"));
        assert_issue(
            &d,
            Error,
            "spec.http[0].match[0].headers.@request.auth.claims.group",
            "only on gateways",
        );
        let d = check(
            KIND,
            &format!("hosts: [r.example.com]\ngateways: [gw]\n{spec}"),
        );
        assert_clean(&d);
    }

    #[test]
    fn unreachable_rules_are_warnings() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n- match: [{uri: {prefix: /a}}]\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Warning, "spec.http[1]", "never used");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- match: [{uri: {prefix: /a}}]\n  route:\n  - destination: {host: r}\n- match: [{uri: {prefix: /a}, name: again}]\n  route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Warning, "spec.http[1].match[0]", "same match");
        assert_issue(&d, Warning, "spec.http[1]", "repeat earlier rules");
    }

    #[test]
    fn export_to() {
        let d = check(
            KIND,
            "hosts: [r]\nexportTo: [\".\", \"*\"]\nhttp:\n- route:\n  - destination: {host: r}\n",
        );
        assert_issue(&d, Error, "spec.exportTo", "\"*\"");
    }

    #[test]
    fn malformed_input_reports_the_path() {
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n    weight: \"fifty\"\n",
        );
        assert_issue(&d, Error, "spec.http[0].route[0].weight", "invalid type");
        let d = check(KIND, "hosts: reviews\nhttp: []\n");
        assert_issue(&d, Error, "spec.hosts", "expected a sequence");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- rout:\n  - destination: {host: r}\n",
        );
        let unknown = d
            .iter()
            .find(|x| x.field.as_deref() == Some("spec.http[0].rout"))
            .unwrap_or_else(|| panic!("{d:#?}"));
        assert_eq!(unknown.code, "ISM0002");
        let d = check(
            KIND,
            "hosts: [r]\nhttp:\n- redirect: {uri: /x, derivePort: SOMEWHERE}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.http[0].redirect.derivePort",
            "unknown variant `SOMEWHERE`",
        );
        // Deprecated snake_case field of the CRD is known.
        let d = check_yaml(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [r]\n  http:\n  - mirror: {host: m}\n    mirror_percent: 5\n    route:\n    - destination: {host: r}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }
}
