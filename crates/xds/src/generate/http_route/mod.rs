//! VirtualService HTTP rules → Envoy routes (Istio's semantics).
//!
//! Follows Istio's `pilot/pkg/networking/core/route` (`BuildHTTPRoutesForVirtualService`,
//! `translateRoute`, `TranslateRouteMatch`, `retry.ConvertPolicy`, `TranslateFault`,
//! `TranslateCORSPolicy`) and the delegate merge of `pilot/pkg/model/virtualservice.go`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::{ClusterWeight, cluster_weight};
use envoy_types::pb::envoy::config::route::v3::{Decorator, Route, RouteAction, WeightedCluster};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, Struct, UInt32Value, Value, value,
};
use isthmus_model::istio::VirtualService;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::refs::{Source, port_matches};
use isthmus_model::istio::validate::parse_duration;
use isthmus_model::istio::virtual_service::{HttpMatchRequest, HttpRoute};
use tracing::warn;

use actions::{
    direct_response_action, header_lists, header_operations, mirror_fraction, mirror_policy,
    policy_mirror_fraction, redirect_action, retry_policy, to_any, translate_cors, translate_fault,
};
use delegate::flatten_rules;
use matching::{is_catch_all, prefix_match, regex_matcher, translate_match};

mod actions;
mod delegate;
mod matching;
#[cfg(test)]
mod tests;

/// Where a VirtualService's HTTP rules are being applied, and how to name what they point at.
pub struct HttpContext<'a> {
    /// The port of the listener (sidecar: the service port; gateway: the server port).
    /// `match.port` selects on it.
    pub port: u16,
    /// The gateway (`namespace/name`, or `mesh` for sidecars) the routes are generated
    /// for, and the proxy's labels and namespace: `match.gateways`, `sourceLabels` and
    /// `sourceNamespace` select on them.
    pub source: Source<'a>,
    /// The cluster for a destination, given the namespace its VirtualService lives in
    /// (short hosts resolve there): `outbound|PORT|SUBSET|HOST`, port defaulted.
    pub cluster: &'a dyn Fn(&Destination, &str) -> String,
    /// Route hash policies for a destination (DestinationRule consistentHash).
    pub hash_policy: &'a dyn Fn(&Destination, &str) -> Vec<HashPolicy>,
    /// A delegate VirtualService by (name, namespace).
    pub delegate: &'a dyn Fn(&str, &str) -> Option<Arc<VirtualService>>,
}

/// The name of the route Istio generates for a service without a VirtualService.
const DEFAULT_ROUTE_NAME: &str = "default";
const FAULT_FILTER: &str = "envoy.filters.http.fault";
const CORS_FILTER: &str = "envoy.filters.http.cors";

/// One HTTP rule ready for translation: the rule (merged with its delegating parent
/// when it comes from a delegate), its match conditions with gateway names resolved to
/// `namespace/name` (or `mesh`), and the namespaces its destinations resolve in.
struct Rule<'a> {
    http: Cow<'a, HttpRoute>,
    matches: Vec<HttpMatchRequest>,
    /// Where `route` and `mirrors` destinations resolve (the delegate's namespace for
    /// rules of a delegate).
    dest_ns: &'a str,
    /// Where the `mirror` destination resolves (the root's namespace when a delegate
    /// rule inherits the root's mirror).
    mirror_ns: &'a str,
}

/// The routes of one VirtualService's `http` rules, in order, for one listener.
///
/// Each rule yields one route per match that applies to this listener (port, gateway,
/// source labels and namespace), or one catch-all route when it has no matches. As in
/// Istio, translation stops after the first catch-all route: nothing after it can match.
/// Rules that `delegate` are replaced by the delegate's rules merged with theirs
/// (Istio's merge: see `merge_matches`); a missing delegate, or a delegate's own
/// `delegate` rules, yield nothing.
pub fn http_routes(
    name: &str,
    namespace: &str,
    vs: &VirtualService,
    ctx: &HttpContext,
) -> Vec<Route> {
    let rules = flatten_rules(name, namespace, vs, ctx);
    let metadata = config_metadata(name, namespace);
    let mut out = Vec::new();
    for rule in &rules {
        if rule.matches.is_empty() {
            out.extend(translate_route(rule, None, name, &metadata, ctx));
            break;
        }
        let mut catch_all = false;
        for m in &rule.matches {
            if let Some(r) = translate_route(rule, Some(m), name, &metadata, ctx) {
                catch_all = is_catch_all(&r);
                out.push(r);
                if catch_all {
                    break;
                }
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

/// The route Istio generates for a service without a VirtualService: everything to
/// `cluster`, with the mesh's default retry policy and no timeout.
pub fn default_route(cluster: &str, hash: Vec<HashPolicy>) -> Route {
    let operation = match parse_subset_key(cluster) {
        Some((port, host)) => format!("{host}:{port}/*"),
        None => format!("{cluster}/*"),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        retry_policy: retry_policy(None, false),
        hash_policy: hash,
        ..Default::default()
    };
    set_timeout(&mut action, None);
    Route {
        name: DEFAULT_ROUTE_NAME.to_string(),
        r#match: Some(prefix_match("/")),
        decorator: Some(Decorator {
            operation,
            ..Default::default()
        }),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// One route
// ---------------------------------------------------------------------------------------

/// Istio's `translateRoute`: the route of one rule and one of its matches (`None` for a
/// rule without matches), or `None` when the match does not apply to this listener or the
/// rule cannot be expressed.
fn translate_route(
    rule: &Rule,
    m: Option<&HttpMatchRequest>,
    vs_name: &str,
    metadata: &Metadata,
    ctx: &HttpContext,
) -> Option<Route> {
    let http = rule.http.as_ref();
    // Gateway names in `m` are resolved already (resolving again changes nothing).
    if let Some(m) = m
        && (!port_matches(m.port, ctx.port) || !ctx.source.matches_http(m.into(), rule.dest_ns))
    {
        return None;
    }
    let mut name = http.name.clone().unwrap_or_default();
    if let Some(match_name) = m.and_then(|m| m.name.as_deref()).filter(|n| !n.is_empty()) {
        name = format!("{name}.{match_name}");
    }
    let mut out = Route {
        name,
        r#match: Some(translate_match(m)),
        metadata: Some(metadata.clone()),
        stat_prefix: m.and_then(|m| m.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let mut authority = None;
    if let Some(headers) = &http.headers {
        authority = header_operations(headers).apply_to(header_lists!(out));
    }
    let action = if let Some(redirect) = &http.redirect {
        match redirect_action(redirect, ctx.port) {
            Some(a) => Action::Redirect(a),
            None => {
                warn!(
                    virtual_service = vs_name,
                    code = redirect.redirect_code,
                    "unsupported redirect code; the route is skipped"
                );
                return None;
            }
        }
    } else if let Some(direct) = &http.direct_response {
        Action::DirectResponse(direct_response_action(direct))
    } else {
        Action::Route(route_action(rule, &mut out, authority, vs_name, ctx)?)
    };
    out.action = Some(action);
    out.decorator = Some(Decorator {
        operation: route_operation(&out, vs_name, ctx.port),
        ..Default::default()
    });
    if let Some(fault) = http.fault.as_ref().and_then(translate_fault) {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), to_any(&fault));
    }
    if let Some(cors) = &http.cors_policy {
        out.typed_per_filter_config
            .insert(CORS_FILTER.to_string(), to_any(&translate_cors(cors)));
    }
    Some(out)
}

/// Istio's `applyHTTPRouteDestination`: timeout, rewrites, mirrors, destinations (one
/// cluster or weighted clusters, with their header operations and hash policies) and
/// the retry policy.
fn route_action(
    rule: &Rule,
    out: &mut Route,
    mut authority: Option<String>,
    vs_name: &str,
    ctx: &HttpContext,
) -> Option<RouteAction> {
    let http = rule.http.as_ref();
    let mut action = RouteAction::default();
    set_timeout(
        &mut action,
        http.timeout.as_deref().and_then(parse_duration_logged),
    );
    if let Some(rewrite) = &http.rewrite {
        if let Some(rr) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(rr.r#match.as_deref().unwrap_or_default())),
                substitution: rr.rewrite.clone().unwrap_or_default(),
            });
        } else if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
            action.prefix_rewrite = uri.to_string();
        }
        if let Some(a) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            authority = Some(a.to_string());
        }
    }
    if let Some(a) = authority {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
    }
    if let Some(mirror) = &http.mirror
        && let Some(fraction) = mirror_fraction(http)
    {
        action.request_mirror_policies.push(mirror_policy(
            (ctx.cluster)(mirror, rule.mirror_ns),
            fraction,
        ));
    }
    for mirror in &http.mirrors {
        if let Some(fraction) = policy_mirror_fraction(mirror.percentage.as_ref()) {
            action.request_mirror_policies.push(mirror_policy(
                (ctx.cluster)(&mirror.destination, rule.dest_ns),
                fraction,
            ));
        }
    }

    let mut consistent_hash = false;
    if let [dst] = http.route.as_slice() {
        action.cluster_specifier = Some(ClusterSpecifier::Cluster((ctx.cluster)(
            &dst.destination,
            rule.dest_ns,
        )));
        if let Some(headers) = &dst.headers {
            // The route's own host rewrite, if any, wins.
            if let Some(a) = header_operations(headers).apply_to(header_lists!(out))
                && action.host_rewrite_specifier.is_none()
            {
                action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
            }
        }
        let hash = (ctx.hash_policy)(&dst.destination, rule.dest_ns);
        consistent_hash = !hash.is_empty();
        action.hash_policy.extend(hash);
    } else {
        let mut clusters = Vec::new();
        for dst in &http.route {
            let weight = dst.weight.unwrap_or(0);
            if weight <= 0 {
                continue;
            }
            let mut cw = ClusterWeight {
                name: (ctx.cluster)(&dst.destination, rule.dest_ns),
                weight: Some(UInt32Value {
                    value: weight.unsigned_abs(),
                }),
                ..Default::default()
            };
            if let Some(headers) = &dst.headers {
                cw.host_rewrite_specifier = header_operations(headers)
                    .apply_to(header_lists!(cw))
                    .map(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral);
            }
            action
                .hash_policy
                .extend((ctx.hash_policy)(&dst.destination, rule.dest_ns));
            clusters.push(cw);
        }
        if clusters.is_empty() {
            warn!(
                virtual_service = vs_name,
                rule = http.name.as_deref().unwrap_or_default(),
                "HTTP rule has no destination with a positive weight; the route is skipped"
            );
            return None;
        }
        action.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }));
    }
    action.retry_policy = retry_policy(http.retries.as_ref(), consistent_hash);
    Some(action)
}

/// Istio's `setTimeout` for proxies (not proxyless gRPC): the rule's timeout or 0s
/// (disabled); the `grpc-timeout` header is honoured up to it
/// (`max_stream_duration.grpc_timeout_header_max`, which replaced `max_grpc_timeout`).
fn set_timeout(action: &mut RouteAction, timeout: Option<PbDuration>) {
    let timeout = timeout.unwrap_or_default();
    action.max_stream_duration = Some(
        envoy_types::pb::envoy::config::route::v3::route_action::MaxStreamDuration {
            grpc_timeout_header_max: Some(timeout),
            ..Default::default()
        },
    );
    action.timeout = Some(timeout);
}

// ---------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------

/// Istio's `BuildConfigInfoMetadata`: `filter_metadata.istio.config` names the VirtualService.
fn config_metadata(name: &str, namespace: &str) -> Metadata {
    let path =
        format!("/apis/networking.istio.io/v1/namespaces/{namespace}/virtual-service/{name}");
    let fields = HashMap::from([(
        "config".to_string(),
        Value {
            kind: Some(value::Kind::StringValue(path)),
        },
    )]);
    Metadata {
        filter_metadata: HashMap::from([("istio".to_string(), Struct { fields })]),
        ..Default::default()
    }
}

/// `outbound|PORT|SUBSET|HOST` → (port, host), Istio's `ParseSubsetKey`.
fn parse_subset_key(cluster: &str) -> Option<(u32, &str)> {
    let mut parts = cluster.split('|');
    let (_, port, _, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((port.parse().unwrap_or(0), host))
}

/// Istio's `GetRouteOperation`: `HOST:PORT/path` for a single cluster, else
/// `VS-NAME:LISTENER-PORT/path`.
fn route_operation(r: &Route, vs_name: &str, port: u16) -> String {
    let path = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
        Some(PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(PathSpecifier::Path(p)) => p.clone(),
        Some(PathSpecifier::SafeRegex(re)) => re.regex.clone(),
        _ => "/*".to_string(),
    };
    if let Some(Action::Route(a)) = &r.action
        && let Some(ClusterSpecifier::Cluster(c)) = &a.cluster_specifier
        && let Some((p, host)) = parse_subset_key(c)
    {
        return format!("{host}:{p}{path}");
    }
    format!("{vs_name}:{port}{path}")
}

fn parse_duration_logged(s: &str) -> Option<PbDuration> {
    let Some(d) = parse_duration(s) else {
        warn!(duration = s, "invalid duration; ignored");
        return None;
    };
    Some(PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}
