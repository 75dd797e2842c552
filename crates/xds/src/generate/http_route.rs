//! VirtualService HTTP rules → Envoy routes (Istio's semantics).
//!
//! Follows Istio's `pilot/pkg/networking/core/route` (`BuildHTTPRoutesForVirtualService`,
//! `translateRoute`, `TranslateRouteMatch`, `retry.ConvertPolicy`, `TranslateFault`,
//! `TranslateCORSPolicy`) and the delegate merge of `pilot/pkg/model/virtualservice.go`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, Metadata, RuntimeFractionalPercent, data_source,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HashPolicy, HostRewriteSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::{ClusterWeight, cluster_weight};
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
    RetryPolicy, Route, RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay as EnvoyFaultDelay;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort as EnvoyFaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::{PathSegment, path_segment};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
    ValueMatcher, list_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration as PbDuration, Struct, UInt32Value, Value, value,
};
use isthmus_model::istio::VirtualService;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::validate::parse_duration;
use isthmus_model::istio::virtual_service::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute, Percent, RedirectPortSelection,
    StringMatch, UnmatchedPreflights,
};
use prost::{Message, Name};
use tracing::{debug, warn};

/// Where a VirtualService's HTTP rules are being applied, and how to name what they point at.
pub struct HttpContext<'a> {
    /// The port of the listener (sidecar: the service port; gateway: the server port).
    /// `match.port` selects on it.
    pub port: u16,
    /// The gateway (`namespace/name`) the routes are generated for; `None` for sidecars
    /// (Istio's `mesh`). `match.gateways` selects on it.
    pub gateway: Option<&'a str>,
    /// The proxy's namespace and workload labels (`sourceNamespace`, `sourceLabels`).
    pub source_namespace: &'a str,
    pub source_labels: &'a BTreeMap<String, String>,
    /// The cluster for a destination, given the namespace its VirtualService lives in
    /// (short hosts resolve there): `outbound|PORT|SUBSET|HOST`, port defaulted.
    pub cluster: &'a dyn Fn(&Destination, &str) -> String,
    /// Route hash policies for a destination (DestinationRule consistentHash).
    pub hash_policy: &'a dyn Fn(&Destination, &str) -> Vec<HashPolicy>,
    /// A delegate VirtualService by (name, namespace).
    pub delegate: &'a dyn Fn(&str, &str) -> Option<Arc<VirtualService>>,
}

/// Istio's name for the sidecars' pseudo-gateway.
const MESH_GATEWAY: &str = "mesh";
/// The name of the route Istio generates for a service without a VirtualService.
const DEFAULT_ROUTE_NAME: &str = "default";
const FAULT_FILTER: &str = "envoy.filters.http.fault";
const CORS_FILTER: &str = "envoy.filters.http.cors";
const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// The header name prefix that routes on JWT claims (`@request.auth.claims.group`).
const JWT_CLAIM_HEADER: &str = "@request.auth.claims";
const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
const JWT_PAYLOAD: &str = "payload";

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
// Rules and delegates
// ---------------------------------------------------------------------------------------

/// The VirtualService's rules with delegates expanded in place.
fn flatten_rules<'a>(
    name: &str,
    namespace: &'a str,
    vs: &'a VirtualService,
    ctx: &HttpContext,
) -> Vec<Rule<'a>> {
    let mut rules = Vec::new();
    for http in &vs.http {
        let root_matches = resolve_match_gateways(&http.r#match, namespace);
        let Some(delegate) = &http.delegate else {
            rules.push(Rule {
                http: Cow::Borrowed(http),
                matches: root_matches,
                dest_ns: namespace,
                mirror_ns: namespace,
            });
            continue;
        };
        let delegate_ns: &'a str = delegate
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(namespace);
        let Some(child_vs) = (ctx.delegate)(&delegate.name, delegate_ns) else {
            warn!(
                virtual_service = %format!("{namespace}/{name}"),
                delegate = %format!("{delegate_ns}/{}", delegate.name),
                "delegate VirtualService not found; its rule is skipped"
            );
            continue;
        };
        for child in &child_vs.http {
            if child.delegate.is_some() {
                warn!(
                    virtual_service = %format!("{namespace}/{name}"),
                    delegate = %format!("{delegate_ns}/{}", delegate.name),
                    "a delegate VirtualService cannot delegate again; its rule is skipped"
                );
                continue;
            }
            let child_matches = resolve_match_gateways(&child.r#match, delegate_ns);
            let Some(matches) = merge_matches(&root_matches, &child_matches) else {
                debug!(
                    virtual_service = %format!("{namespace}/{name}"),
                    delegate = %format!("{delegate_ns}/{}", delegate.name),
                    rule = child.name.as_deref().unwrap_or_default(),
                    "delegate rule's matches conflict with the root's; the rule is skipped"
                );
                continue;
            };
            let mirror_ns = if child.mirror.is_some() {
                delegate_ns
            } else {
                namespace
            };
            rules.push(Rule {
                http: Cow::Owned(merge_rule(http, child)),
                matches,
                dest_ns: delegate_ns,
                mirror_ns,
            });
        }
    }
    rules
}

/// Istio's `mergeHTTPRoute`: the delegate's rule, named `root-child`, inheriting the
/// root's rewrite, timeout, retries, fault, mirror, CORS policy and headers when it has
/// none of its own. (Matches are merged separately.)
fn merge_rule(root: &HttpRoute, child: &HttpRoute) -> HttpRoute {
    let mut out = child.clone();
    out.r#match = Vec::new();
    out.name = merge_names(root.name.as_deref(), child.name.as_deref());
    inherit(&mut out.rewrite, &root.rewrite);
    inherit(&mut out.timeout, &root.timeout);
    inherit(&mut out.retries, &root.retries);
    inherit(&mut out.fault, &root.fault);
    inherit(&mut out.mirror, &root.mirror);
    inherit(&mut out.mirror_percent, &root.mirror_percent);
    inherit(&mut out.mirror_percent_legacy, &root.mirror_percent_legacy);
    inherit(&mut out.mirror_percentage, &root.mirror_percentage);
    inherit(&mut out.cors_policy, &root.cors_policy);
    inherit(&mut out.headers, &root.headers);
    out
}

/// The delegate's name, prefixed `root-` when both are named (Istio's merge).
fn merge_names(root: Option<&str>, child: Option<&str>) -> Option<String> {
    let root = root.filter(|r| !r.is_empty());
    match child.filter(|c| !c.is_empty()) {
        None => root.map(str::to_string),
        Some(c) => Some(match root {
            Some(r) => format!("{r}-{c}"),
            None => c.to_string(),
        }),
    }
}

/// Takes the root's value when there is no own value.
fn inherit<T: Clone>(own: &mut Option<T>, root: &Option<T>) {
    if own.is_none() {
        own.clone_from(root);
    }
}

/// Istio's `mergeHTTPMatchRequests`: with matches on both sides, every delegate match
/// must be compatible with (narrower than) at least one root match, and yields one
/// merged match per compatible root match; a delegate match compatible with none drops
/// the whole delegate rule (`None`). Without matches on one side, the other side's
/// matches are used as they are.
///
/// Two string conditions are compatible when either is absent, both are the same
/// exact value, the delegate's exact or prefix value starts with the root's prefix,
/// or (regex) only one side sets the condition at all.
fn merge_matches(
    root: &[HttpMatchRequest],
    child: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(child.to_vec());
    }
    if child.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for c in child {
        let before = out.len();
        for r in root {
            if !match_conflict(r, c) {
                out.push(merge_match(r, c));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// Istio's `mergeHTTPMatchRequest`: the delegate's condition where it has one, else the
/// root's; maps (headers, query parameters, source labels) are unions, the delegate's
/// entries winning.
fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = child.clone();
    out.name = merge_names(root.name.as_deref(), child.name.as_deref());
    inherit(&mut out.uri, &root.uri);
    inherit(&mut out.scheme, &root.scheme);
    inherit(&mut out.method, &root.method);
    inherit(&mut out.authority, &root.authority);
    fn union<V: Clone>(
        child: &BTreeMap<String, V>,
        root: &BTreeMap<String, V>,
    ) -> BTreeMap<String, V> {
        let mut m = root.clone();
        m.extend(child.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }
    out.headers = union(&child.headers, &root.headers);
    out.without_headers = union(&child.without_headers, &root.without_headers);
    out.query_params = union(&child.query_params, &root.query_params);
    out.source_labels = union(&child.source_labels, &root.source_labels);
    if out.port.unwrap_or(0) == 0 {
        out.port = root.port;
    }
    if out
        .source_namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    out
}

/// Istio's `hasConflict`: whether a delegate match can never be narrower than a root match.
fn match_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    let (rp, lp) = (root.port.unwrap_or(0), leaf.port.unwrap_or(0));
    if rp > 0 && lp > 0 && rp != lp {
        return true;
    }
    let root_ns = root.source_namespace.as_deref().unwrap_or_default();
    if !root_ns.is_empty() && leaf.source_namespace.as_deref().unwrap_or_default() != root_ns {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// Istio's `stringMatchConflict`.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let any_set = |m: &StringMatch| set(&m.exact) || set(&m.prefix) || set(&m.regex);
    if set(&root.regex) && any_set(leaf) {
        return true;
    }
    if set(&leaf.regex) && any_set(root) {
        return true;
    }
    if let Some(exact) = root.exact.as_deref().filter(|s| !s.is_empty()) {
        return set(&leaf.prefix) || leaf.exact.as_deref().unwrap_or_default() != exact;
    }
    if let Some(prefix) = root.prefix.as_deref().filter(|s| !s.is_empty()) {
        if let Some(p) = leaf.prefix.as_deref().filter(|s| !s.is_empty()) {
            return !p.starts_with(prefix);
        }
        if let Some(e) = leaf.exact.as_deref().filter(|s| !s.is_empty()) {
            return !e.starts_with(prefix);
        }
    }
    true
}

/// The matches with their `gateways` as `namespace/name` (short names are in `namespace`,
/// the legacy `name.namespace[.svc...]` form is converted) or `mesh`.
fn resolve_match_gateways(matches: &[HttpMatchRequest], namespace: &str) -> Vec<HttpMatchRequest> {
    matches
        .iter()
        .map(|m| {
            let mut m = m.clone();
            for g in &mut m.gateways {
                *g = resolve_gateway(g, namespace);
            }
            m
        })
        .collect()
}

fn resolve_gateway(gateway: &str, namespace: &str) -> String {
    if gateway == MESH_GATEWAY || gateway.contains('/') {
        return gateway.to_string();
    }
    match gateway.split_once('.') {
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or_default();
            format!("{ns}/{name}")
        }
        None => format!("{namespace}/{gateway}"),
    }
}

/// Istio's `sourceMatchHTTP`: with `gateways`, one of them must be the current gateway
/// (and source labels and namespace are not looked at); otherwise the source labels must
/// be a subset of the proxy's and the source namespace the proxy's.
fn source_matches(m: &HttpMatchRequest, ctx: &HttpContext) -> bool {
    if !m.gateways.is_empty() {
        let current = ctx.gateway.unwrap_or(MESH_GATEWAY);
        return m.gateways.iter().any(|g| g == current);
    }
    let labels_match = m
        .source_labels
        .iter()
        .all(|(k, v)| ctx.source_labels.get(k) == Some(v));
    labels_match
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns.is_empty() || ns == ctx.source_namespace)
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
    if let Some(m) = m {
        if let Some(port) = m.port
            && port != 0
            && port != u32::from(ctx.port)
        {
            return None;
        }
        if !source_matches(m, ctx) {
            return None;
        }
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
        let ops = header_operations(headers);
        out.request_headers_to_add = ops.request_add;
        out.request_headers_to_remove = ops.request_remove;
        out.response_headers_to_add = ops.response_add;
        out.response_headers_to_remove = ops.response_remove;
        authority = ops.authority;
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
            let ops = header_operations(headers);
            out.request_headers_to_add.extend(ops.request_add);
            out.request_headers_to_remove.extend(ops.request_remove);
            out.response_headers_to_add.extend(ops.response_add);
            out.response_headers_to_remove.extend(ops.response_remove);
            if let Some(a) = ops.authority
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
                let ops = header_operations(headers);
                cw.request_headers_to_add = ops.request_add;
                cw.request_headers_to_remove = ops.request_remove;
                cw.response_headers_to_add = ops.response_add;
                cw.response_headers_to_remove = ops.response_remove;
                cw.host_rewrite_specifier = ops
                    .authority
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
// Matches
// ---------------------------------------------------------------------------------------

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

/// Istio's `TranslateRouteMatch` (VirtualService semantics).
fn translate_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = prefix_match("/");
    let Some(m) = m else {
        return out;
    };
    for (name, sm) in &m.headers {
        match jwt_claims(name) {
            Some(claims) => out.dynamic_metadata.push(jwt_claim_matcher(claims, sm)),
            None => out.headers.push(header_matcher(name, sm)),
        }
    }
    for (name, sm) in &m.without_headers {
        match jwt_claims(name) {
            Some(claims) => {
                let mut mm = jwt_claim_matcher(claims, sm);
                mm.invert = true;
                out.dynamic_metadata.push(mm);
            }
            None => {
                let mut hm = header_matcher(name, sm);
                hm.invert_match = true;
                // treat_missing_header_as_empty conflicts with present_match.
                hm.treat_missing_header_as_empty = !is_presence(sm);
                out.headers.push(hm);
            }
        }
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(uri) = &m.uri {
        match kind(uri) {
            Some(Kind::Exact(p)) => out.path_specifier = Some(PathSpecifier::Path(p.to_string())),
            Some(Kind::Prefix(p)) => {
                out.path_specifier = Some(PathSpecifier::Prefix(p.to_string()));
            }
            Some(Kind::Regex(r)) => {
                out.path_specifier = Some(PathSpecifier::SafeRegex(regex_matcher(r)));
            }
            None => {}
        }
    }
    out.case_sensitive = Some(BoolValue {
        value: !m.ignore_uri_case.unwrap_or(false),
    });
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(name, sm));
        }
    }
    for (name, sm) in &m.query_params {
        let specifier = if is_presence(sm) {
            Some(QueryParameterMatchSpecifier::PresentMatch(true))
        } else {
            string_matcher(sm).map(QueryParameterMatchSpecifier::StringMatch)
        };
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: specifier,
        });
    }
    out
}

/// The condition of a StringMatch (validation allows only one; exact, then prefix, then
/// regex wins otherwise).
enum Kind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

fn kind(sm: &StringMatch) -> Option<Kind<'_>> {
    if let Some(e) = &sm.exact {
        Some(Kind::Exact(e))
    } else if let Some(p) = &sm.prefix {
        Some(Kind::Prefix(p))
    } else {
        sm.regex.as_deref().map(Kind::Regex)
    }
}

/// Istio's `canBeConvertedToPresentMatch`: an empty StringMatch, or the regex `*`.
fn is_presence(sm: &StringMatch) -> bool {
    matches!(kind(sm), None | Some(Kind::Regex("*")))
}

fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

/// Istio's `ConvertToEnvoyMatch`.
fn string_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = match kind(sm)? {
        Kind::Exact(e) => string_matcher::MatchPattern::Exact(e.to_string()),
        Kind::Prefix(p) => string_matcher::MatchPattern::Prefix(p.to_string()),
        Kind::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex_matcher(r)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

/// Istio's `translateHeaderMatch`: presence for an empty match (or regex `*`), else a
/// string match.
fn header_matcher(name: &str, sm: &StringMatch) -> HeaderMatcher {
    let specifier = if is_presence(sm) {
        Some(HeaderMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(sm).map(HeaderMatchSpecifier::StringMatch)
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: specifier,
        ..Default::default()
    }
}

/// Istio's `jwt.ToRoutingClaim`: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`.
fn jwt_claims(header: &str) -> Option<Vec<String>> {
    let prefix = header.get(..JWT_CLAIM_HEADER.len())?;
    if !prefix.eq_ignore_ascii_case(JWT_CLAIM_HEADER) {
        return None;
    }
    let rest = &header[JWT_CLAIM_HEADER.len()..];
    if let Some(dotted) = rest.strip_prefix('.').filter(|s| !s.is_empty()) {
        return Some(dotted.split('.').map(str::to_string).collect());
    }
    if rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']') {
        return Some(
            rest[1..rest.len() - 1]
                .split("][")
                .map(str::to_string)
                .collect(),
        );
    }
    None
}

/// Istio's `MetadataMatcherForJWTClaims` (extended form: the claim is a string, or a list
/// containing a matching string). An empty StringMatch checks the claim's presence.
fn jwt_claim_matcher(claims: Vec<String>, sm: &StringMatch) -> MetadataMatcher {
    let path = std::iter::once(JWT_PAYLOAD.to_string())
        .chain(claims)
        .map(|key| PathSegment {
            segment: Some(path_segment::Segment::Key(key)),
        })
        .collect();
    let value = match string_matcher(sm) {
        Some(string) => {
            let single = ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(string)),
            };
            let list = ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                    ListMatcher {
                        match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                            single.clone(),
                        ))),
                    },
                ))),
            };
            ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                    value_matchers: vec![list, single],
                })),
            }
        }
        None => ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)),
        },
    };
    MetadataMatcher {
        filter: JWT_FILTER.to_string(),
        path,
        value: Some(value),
        invert: false,
    }
}

/// Istio's `IsCatchAllRoute`: prefix `/` (or regex `.*`) and no other condition.
fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let catch_all_path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    catch_all_path
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct HeaderOps {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
    /// A `Host`/`:authority` set or added on requests: a host rewrite.
    authority: Option<String>,
}

/// Istio's `TranslateHeadersOperations`: `set` overwrites, `add` appends (each sorted by
/// name); pseudo-headers and `Host` cannot be changed this way, but a request `Host` or
/// `:authority` becomes a host rewrite (`set` winning over `add`).
fn header_operations(h: &Headers) -> HeaderOps {
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let (mut request_add, set_authority) =
        header_values(&req.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
    let (add, add_authority) = header_values(&req.add, HeaderAppendAction::AppendIfExistsOrAdd);
    request_add.extend(add);
    let (mut response_add, _) =
        header_values(&resp.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
    response_add.extend(header_values(&resp.add, HeaderAppendAction::AppendIfExistsOrAdd).0);
    HeaderOps {
        request_add,
        request_remove: drop_internal(&req.remove),
        response_add,
        response_remove: drop_internal(&resp.remove),
        authority: set_authority.or(add_authority),
    }
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn header_values(
    headers: &BTreeMap<String, String>,
    action: HeaderAppendAction,
) -> (Vec<HeaderValueOption>, Option<String>) {
    let mut authority = None;
    let mut out = Vec::new();
    for (key, value) in headers {
        if is_authority_header(key) {
            authority = Some(value.clone());
        }
        if is_internal_header(key) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    (out, authority)
}

fn drop_internal(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_internal_header(n))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Redirects and direct responses
// ---------------------------------------------------------------------------------------

/// Istio's `ApplyRedirect` (listener not TLS: an unset scheme is `http`); `None` for an
/// unsupported redirect code.
fn redirect_action(r: &HttpRedirect, listener_port: u16) -> Option<RedirectAction> {
    let response_code = match r.redirect_code.unwrap_or(0) {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => return None,
    };
    let mut out = RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        response_code: response_code as i32,
        ..Default::default()
    };
    if let Some(prefix) = &r.prefix_rewrite {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PrefixRewrite(prefix.clone()));
    } else if let Some(uri) = &r.uri {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PathRedirect(uri.clone()));
    }
    let scheme = r.scheme.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = scheme {
        out.scheme_rewrite_specifier = Some(SchemeRewriteSpecifier::SchemeRedirect(s.to_string()));
    }
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(u32::from(listener_port)),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => Some(0),
        (None, None) => None,
    };
    if let Some(port) = port {
        let scheme = scheme.unwrap_or("http");
        // No explicit :80 for http or :443 for https.
        out.port_redirect = match (port, scheme) {
            (80, "http") | (443, "https") => 0,
            _ => port,
        };
    }
    Some(out)
}

/// Istio's `ApplyDirectResponse`: the status and an inline body (`bytes` is base64).
fn direct_response_action(d: &HttpDirectResponse) -> DirectResponseAction {
    let body = d.body.as_ref().and_then(|b| {
        let specifier = if let Some(s) = &b.string {
            data_source::Specifier::InlineString(s.clone())
        } else {
            let encoded = b.bytes.as_deref()?;
            let bytes = decode_base64(encoded).unwrap_or_else(|| {
                warn!("directResponse body bytes are not valid base64; sent as they are");
                encoded.as_bytes().to_vec()
            });
            data_source::Specifier::InlineBytes(bytes)
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        })
    });
    DirectResponseAction {
        status: d.status,
        body,
        ..Default::default()
    }
}

/// Standard or URL-safe base64, padding optional (as protobuf JSON accepts for `bytes`).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character (6 bits) cannot end a valid encoding.
    (bits < 6).then_some(out)
}

// ---------------------------------------------------------------------------------------
// Retries, mirrors, faults, CORS
// ---------------------------------------------------------------------------------------

fn to_any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Istio's `retry.ConvertPolicy`: the default policy without `retries`, none with
/// `attempts` 0 (or unset), else the default overridden by the rule's fields. With a
/// consistent-hash destination the default omits the previous-hosts predicate.
fn retry_policy(r: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = RetryPolicy {
        num_retries: Some(UInt32Value { value: 2 }),
        retry_on: DEFAULT_RETRY_ON.to_string(),
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    };
    if !consistent_hash {
        out.retry_host_predicate = vec![previous_hosts_predicate()];
    }
    let Some(r) = r else {
        return Some(out);
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    out.num_retries = Some(UInt32Value {
        value: attempts.unsigned_abs(),
    });
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let (on, codes) = parse_retry_on(retry_on);
        out.retry_on = on;
        out.retriable_status_codes = codes;
        if !out.retriable_status_codes.is_empty()
            && !out.retry_on.contains("retriable-status-codes")
        {
            if !out.retry_on.is_empty() {
                out.retry_on.push(',');
            }
            out.retry_on.push_str("retriable-status-codes");
        }
    }
    if let Some(t) = r.per_try_timeout.as_deref() {
        out.per_try_timeout = parse_duration_logged(t);
    }
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts_predicate()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(RetryPriority {
            name: PREVIOUS_PRIORITIES.to_string(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(to_any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if let Some(b) = r.backoff.as_deref() {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: parse_duration_logged(b),
            max_interval: None,
        });
    }
    Some(out)
}

fn previous_hosts_predicate() -> RetryHostPredicate {
    RetryHostPredicate {
        name: PREVIOUS_HOSTS_PREDICATE.to_string(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(to_any(
            &PreviousHostsPredicate {},
        ))),
    }
}

/// Istio's `parseRetryOn`: HTTP status codes go to `retriable_status_codes`, the rest stay
/// policies.
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut policies = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if is_known_status(code) => codes.push(code),
            _ => policies.push(part),
        }
    }
    (policies.join(","), codes)
}

/// Status codes Go's `http.StatusText` knows (Istio's test for a retriable status code).
fn is_known_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428
        | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

/// Istio's `translatePercentToFractionalPercent`: per million.
fn percent_fraction(p: &Percent) -> FractionalPercent {
    FractionalPercent {
        numerator: (p.value.unwrap_or(0.0) * 10000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// Istio's `translateIntegerToFractionalPercent`: per hundred.
fn integer_fraction(p: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: p,
        denominator: DenominatorType::Hundred as i32,
    }
}

/// Istio's `MirrorPercent`: `mirrorPercentage`, else `mirrorPercent`, else 100%; `None`
/// (no mirroring) when explicitly 0.
fn mirror_fraction(http: &HttpRoute) -> Option<RuntimeFractionalPercent> {
    let fraction = if let Some(p) = &http.mirror_percentage {
        (p.value.unwrap_or(0.0) > 0.0).then(|| percent_fraction(p))?
    } else if let Some(p) = http.mirror_percent.or(http.mirror_percent_legacy) {
        (p > 0).then(|| integer_fraction(p))?
    } else {
        integer_fraction(100)
    };
    Some(RuntimeFractionalPercent {
        default_value: Some(fraction),
        runtime_key: String::new(),
    })
}

/// Istio's `MirrorPercentByPolicy`.
fn policy_mirror_fraction(p: Option<&Percent>) -> Option<RuntimeFractionalPercent> {
    let fraction = match p {
        Some(p) => (p.value.unwrap_or(0.0) > 0.0).then(|| percent_fraction(p))?,
        None => integer_fraction(100),
    };
    Some(RuntimeFractionalPercent {
        default_value: Some(fraction),
        runtime_key: String::new(),
    })
}

fn mirror_policy(cluster: String, fraction: RuntimeFractionalPercent) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(fraction),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Istio's `TranslateFault`: a fixed delay and/or an HTTP or gRPC abort; `None` when
/// neither can be expressed (exponential delays and HTTP/2 errors are not supported).
fn translate_fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let percentage = match &d.percentage {
            Some(p) => percent_fraction(p),
            None => integer_fraction(d.percent.unwrap_or(0).max(0).unsigned_abs()),
        };
        let Some(fixed) = d.fixed_delay.as_deref().and_then(parse_duration_logged) else {
            warn!("only fixed delay faults are supported; the delay is ignored");
            return None;
        };
        Some(EnvoyFaultDelay {
            percentage: Some(percentage),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(fixed)),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            ErrorType::HttpStatus(status.max(0).unsigned_abs())
        } else if let Some(status) = &a.grpc_status {
            ErrorType::GrpcStatus(grpc_status_code(status))
        } else {
            warn!("only HTTP and gRPC abort faults are supported; the abort is ignored");
            return None;
        };
        Some(EnvoyFaultAbort {
            percentage: a.percentage.as_ref().map(percent_fraction),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// A gRPC status name (`UNAVAILABLE`) or number to its code; unknown names are 0, as in
/// Istio's lookup.
fn grpc_status_code(status: &str) -> u32 {
    if let Ok(n) = status.parse::<u32>() {
        return n;
    }
    isthmus_model::istio::virtual_service::GRPC_STATUSES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(status))
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(0)
}

/// Istio's `TranslateCORSPolicy`.
fn translate_cors(c: &CorsPolicy) -> EnvoyCorsPolicy {
    let allow_origin_string_match = if c.allow_origins.is_empty() {
        c.allow_origin
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
                ignore_case: false,
            })
            .collect()
    } else {
        c.allow_origins.iter().filter_map(string_matcher).collect()
    };
    EnvoyCorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(parse_duration)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(integer_fraction(100)),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        }),
        ..Default::default()
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
        Header as HashHeader, PolicySpecifier,
    };
    use isthmus_model::{Object, parse_documents};
    use serde_json::json;

    use super::*;

    /// `outbound|PORT|SUBSET|HOST`, short hosts in `ns`, port 9080 by default.
    fn test_cluster(d: &Destination, ns: &str) -> String {
        let host = if d.host.contains('.') {
            d.host.clone()
        } else {
            format!("{}.{ns}.svc.cluster.local", d.host)
        };
        let port = d.port.as_ref().and_then(|p| p.number).unwrap_or(9080);
        format!(
            "outbound|{port}|{}|{host}",
            d.subset.as_deref().unwrap_or_default()
        )
    }

    fn header_hash(name: &str) -> HashPolicy {
        HashPolicy {
            policy_specifier: Some(PolicySpecifier::Header(HashHeader {
                header_name: name.to_string(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// Hosts named `sticky*` have a consistent-hash DestinationRule.
    fn test_hash(d: &Destination, _ns: &str) -> Vec<HashPolicy> {
        if d.host.starts_with("sticky") {
            vec![header_hash("x-user")]
        } else {
            Vec::new()
        }
    }

    struct Env {
        port: u16,
        gateway: Option<&'static str>,
        namespace: &'static str,
        labels: BTreeMap<String, String>,
        delegates: Vec<(&'static str, &'static str, Arc<VirtualService>)>,
    }

    impl Default for Env {
        fn default() -> Self {
            Self {
                port: 9080,
                gateway: None,
                namespace: "default",
                labels: BTreeMap::new(),
                delegates: Vec::new(),
            }
        }
    }

    impl Env {
        fn routes(&self, spec: serde_json::Value) -> Vec<Route> {
            let vs: VirtualService = serde_json::from_value(spec).expect("VirtualService spec");
            self.routes_of(&vs)
        }

        fn routes_of(&self, vs: &VirtualService) -> Vec<Route> {
            let delegate = |name: &str, ns: &str| {
                self.delegates
                    .iter()
                    .find(|(n, s, _)| *n == name && *s == ns)
                    .map(|(_, _, v)| v.clone())
            };
            let ctx = HttpContext {
                port: self.port,
                gateway: self.gateway,
                source_namespace: self.namespace,
                source_labels: &self.labels,
                cluster: &test_cluster,
                hash_policy: &test_hash,
                delegate: &delegate,
            };
            http_routes("reviews", "default", vs, &ctx)
        }
    }

    fn routes(spec: serde_json::Value) -> Vec<Route> {
        Env::default().routes(spec)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn action(r: &Route) -> &RouteAction {
        match &r.action {
            Some(Action::Route(a)) => a,
            other => panic!("not a route action: {other:?}"),
        }
    }

    fn cluster_of(r: &Route) -> &str {
        match &action(r).cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => c,
            other => panic!("not a single cluster: {other:?}"),
        }
    }

    fn weighted(r: &Route) -> &[ClusterWeight] {
        match &action(r).cluster_specifier {
            Some(ClusterSpecifier::WeightedClusters(w)) => &w.clusters,
            other => panic!("not weighted clusters: {other:?}"),
        }
    }

    fn path(r: &Route) -> &PathSpecifier {
        r.r#match
            .as_ref()
            .and_then(|m| m.path_specifier.as_ref())
            .expect("path specifier")
    }

    fn route_match(r: &Route) -> &RouteMatch {
        r.r#match.as_ref().expect("match")
    }

    fn decode<M: Message + Name + Default>(any: &Any) -> M {
        assert_eq!(any.type_url, M::type_url());
        M::decode(any.value.as_slice()).expect("decodes")
    }

    fn secs(s: i64) -> Option<PbDuration> {
        Some(PbDuration {
            seconds: s,
            nanos: 0,
        })
    }

    fn exact(s: &str) -> Option<HeaderMatchSpecifier> {
        Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
            ignore_case: false,
        }))
    }

    fn header_option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

    #[test]
    fn rule_without_match_is_one_catch_all_route() {
        let r = routes(
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
        );
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.name, "");
        assert_eq!(r.r#match, Some(prefix_match("/")));
        assert_eq!(cluster_of(r), REVIEWS);
        let a = action(r);
        assert_eq!(a.timeout, secs(0));
        let max_grpc = a
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.grpc_timeout_header_max);
        assert_eq!(max_grpc, secs(0));
        assert_eq!(a.retry_policy, retry_policy(None, false));
        assert_eq!(
            r.decorator.as_ref().map(|d| d.operation.as_str()),
            Some("reviews.default.svc.cluster.local:9080/*")
        );
        let istio = &r.metadata.as_ref().expect("metadata").filter_metadata["istio"];
        assert_eq!(
            istio.fields["config"].kind,
            Some(value::Kind::StringValue(
                "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews".into()
            ))
        );
        assert!(r.typed_per_filter_config.is_empty());
    }

    #[test]
    fn uri_matches() {
        let r = routes(json!({"http": [{
            "name": "r",
            "match": [
                {"name": "e", "uri": {"exact": "/a"}},
                {"uri": {"prefix": "/b"}},
                {"uri": {"regex": "/c/[0-9]+"}, "ignoreUriCase": true},
            ],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].name, "r.e");
        assert_eq!(r[1].name, "r");
        assert_eq!(path(&r[0]), &PathSpecifier::Path("/a".into()));
        assert_eq!(path(&r[1]), &PathSpecifier::Prefix("/b".into()));
        assert_eq!(
            path(&r[2]),
            &PathSpecifier::SafeRegex(RegexMatcher {
                regex: "/c/[0-9]+".into(),
                engine_type: None
            })
        );
        assert_eq!(
            route_match(&r[0]).case_sensitive,
            Some(BoolValue { value: true })
        );
        assert_eq!(
            route_match(&r[2]).case_sensitive,
            Some(BoolValue { value: false })
        );
        assert_eq!(
            r[0].decorator.as_ref().map(|d| d.operation.as_str()),
            Some("reviews.default.svc.cluster.local:9080/a")
        );
        assert_eq!(
            r[1].decorator.as_ref().map(|d| d.operation.as_str()),
            Some("reviews.default.svc.cluster.local:9080/b*")
        );
    }

    #[test]
    fn header_method_authority_scheme_matches() {
        let r = routes(json!({"http": [{
            "match": [{
                "headers": {
                    "x-b": {"prefix": "pre"},
                    "x-a": {"exact": "v"},
                    "x-c": {"regex": "v[0-9]"},
                    "x-present": {},
                    "x-star": {"regex": "*"},
                },
                "method": {"exact": "GET"},
                "authority": {"prefix": "reviews"},
                "scheme": {"exact": "https"},
            }],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let h = &route_match(&r[0]).headers;
        let names: Vec<_> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-a",
                "x-b",
                "x-c",
                "x-present",
                "x-star",
                ":method",
                ":authority",
                ":scheme"
            ]
        );
        assert_eq!(h[0].header_match_specifier, exact("v"));
        assert_eq!(
            h[1].header_match_specifier,
            Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix("pre".into())),
                ignore_case: false
            }))
        );
        assert_eq!(
            h[2].header_match_specifier,
            Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(
                    "v[0-9]"
                ))),
                ignore_case: false
            }))
        );
        assert_eq!(
            h[3].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert_eq!(
            h[4].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert_eq!(h[5].header_match_specifier, exact("GET"));
        assert_eq!(h[7].header_match_specifier, exact("https"));
        assert!(h.iter().all(|h| !h.invert_match));
        // A match with headers is not a catch-all: nothing is cut after it.
        assert!(!is_catch_all(&r[0]));
    }

    #[test]
    fn query_parameter_matches() {
        let r = routes(json!({"http": [{
            "match": [{"queryParams": {"a": {"exact": "1"}, "b": {"prefix": "x"}, "c": {"regex": "[0-9]+"}, "d": {}}}],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let q = &route_match(&r[0]).query_parameters;
        assert_eq!(q.len(), 4);
        assert_eq!(q[0].name, "a");
        assert_eq!(
            q[0].query_parameter_match_specifier,
            Some(QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("1".into())),
                ignore_case: false
            }))
        );
        assert_eq!(
            q[1].query_parameter_match_specifier,
            Some(QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix("x".into())),
                ignore_case: false
            }))
        );
        assert_eq!(
            q[2].query_parameter_match_specifier,
            Some(QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(
                    "[0-9]+"
                ))),
                ignore_case: false
            }))
        );
        assert_eq!(
            q[3].query_parameter_match_specifier,
            Some(QueryParameterMatchSpecifier::PresentMatch(true))
        );
    }

    #[test]
    fn without_headers_invert() {
        let r = routes(json!({"http": [{
            "match": [{"withoutHeaders": {"x-debug": {"exact": "1"}, "x-canary": {}}}],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let h = &route_match(&r[0]).headers;
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "x-canary");
        assert!(h[0].invert_match);
        assert!(!h[0].treat_missing_header_as_empty);
        assert_eq!(
            h[0].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert_eq!(h[1].name, "x-debug");
        assert!(h[1].invert_match);
        assert!(h[1].treat_missing_header_as_empty);
        assert_eq!(h[1].header_match_specifier, exact("1"));
    }

    #[test]
    fn jwt_claim_headers_match_metadata() {
        let r = routes(json!({"http": [{
            "match": [{
                "headers": {"@request.auth.claims.group": {"exact": "admin"}},
                "withoutHeaders": {"@request.auth.claims[org][team]": {"exact": "x"}},
            }],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let m = route_match(&r[0]);
        assert!(m.headers.is_empty());
        assert_eq!(m.dynamic_metadata.len(), 2);
        let keys = |mm: &MetadataMatcher| -> Vec<String> {
            mm.path
                .iter()
                .filter_map(|p| {
                    p.segment
                        .as_ref()
                        .map(|path_segment::Segment::Key(k)| k.clone())
                })
                .collect()
        };
        assert_eq!(m.dynamic_metadata[0].filter, JWT_FILTER);
        assert_eq!(keys(&m.dynamic_metadata[0]), ["payload", "group"]);
        assert!(!m.dynamic_metadata[0].invert);
        assert_eq!(keys(&m.dynamic_metadata[1]), ["payload", "org", "team"]);
        assert!(m.dynamic_metadata[1].invert);
        let Some(value_matcher::MatchPattern::OrMatch(or)) = m.dynamic_metadata[0]
            .value
            .as_ref()
            .and_then(|v| v.match_pattern.as_ref())
        else {
            panic!("or matcher expected");
        };
        assert_eq!(or.value_matchers.len(), 2);
        assert!(!is_catch_all(&r[0]));
    }

    #[test]
    fn weighted_destinations_with_subsets_and_headers() {
        let r = routes(json!({"http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70,
             "headers": {"request": {"set": {"x-v": "1"}}, "response": {"remove": ["x-internal"]}}},
            {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9081}}, "weight": 30},
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": 0},
        ]}]}));
        let w = weighted(&r[0]);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0].name,
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(w[0].weight, Some(UInt32Value { value: 70 }));
        assert_eq!(
            w[0].request_headers_to_add,
            [header_option(
                "x-v",
                "1",
                HeaderAppendAction::OverwriteIfExistsOrAdd
            )]
        );
        assert_eq!(w[0].response_headers_to_remove, ["x-internal"]);
        assert_eq!(
            w[1].name,
            "outbound|9081|v2|reviews.default.svc.cluster.local"
        );
        assert_eq!(w[1].weight, Some(UInt32Value { value: 30 }));
        // Several clusters: the operation names the VirtualService and listener port.
        assert_eq!(
            r[0].decorator.as_ref().map(|d| d.operation.as_str()),
            Some("reviews:9080/*")
        );
        // Destination headers stay on the cluster, not the route.
        assert!(r[0].request_headers_to_add.is_empty());
    }

    #[test]
    fn single_destination_is_a_cluster_whatever_its_weight() {
        let r = routes(json!({"http": [{"route": [
            {"destination": {"host": "ratings.prod.svc.cluster.local", "subset": "v2"}},
        ]}]}));
        assert_eq!(
            cluster_of(&r[0]),
            "outbound|9080|v2|ratings.prod.svc.cluster.local"
        );
        let r = routes(json!({"http": [{"route": [
            {"destination": {"host": "reviews"}, "weight": 100},
        ]}]}));
        assert_eq!(cluster_of(&r[0]), REVIEWS);
    }

    #[test]
    fn only_zero_weights_yield_no_route() {
        let r = routes(json!({"http": [
            {"match": [{"uri": {"prefix": "/a"}}], "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
                {"destination": {"host": "reviews", "subset": "v2"}},
            ]},
            {"route": [{"destination": {"host": "reviews"}}]},
        ]}));
        assert_eq!(r.len(), 1);
        assert_eq!(cluster_of(&r[0]), REVIEWS);
    }

    #[test]
    fn routes_after_a_catch_all_are_not_generated() {
        let r = routes(json!({"http": [
            {"match": [{"uri": {"prefix": "/"}}, {"uri": {"prefix": "/never"}}],
             "route": [{"destination": {"host": "reviews"}}]},
            {"route": [{"destination": {"host": "ratings"}}]},
        ]}));
        assert_eq!(r.len(), 1);
        assert_eq!(path(&r[0]), &PathSpecifier::Prefix("/".into()));
        let r = routes(json!({"http": [
            {"route": [{"destination": {"host": "reviews"}}]},
            {"route": [{"destination": {"host": "ratings"}}]},
        ]}));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn redirects() {
        let r = routes(json!({"http": [
            {"match": [{"uri": {"exact": "/a"}}],
             "redirect": {"uri": "/new", "authority": "new.example.com", "port": 8443, "scheme": "https", "redirectCode": 302}},
            {"match": [{"uri": {"exact": "/b"}}], "redirect": {"uri": "/b2", "derivePort": "FROM_REQUEST_PORT"}},
            {"match": [{"uri": {"exact": "/c"}}], "redirect": {"authority": "c.example.com", "port": 80}},
            {"match": [{"uri": {"exact": "/d"}}], "redirect": {"prefixRewrite": "/dd", "redirectCode": 308}},
            {"match": [{"uri": {"exact": "/e"}}], "redirect": {"uri": "/x", "redirectCode": 304}},
        ]}));
        assert_eq!(r.len(), 4, "the unsupported 304 is skipped");
        let redirect = |r: &Route| match &r.action {
            Some(Action::Redirect(a)) => a.clone(),
            other => panic!("not a redirect: {other:?}"),
        };
        let a = redirect(&r[0]);
        assert_eq!(a.host_redirect, "new.example.com");
        assert_eq!(
            a.path_rewrite_specifier,
            Some(PathRewriteSpecifier::PathRedirect("/new".into()))
        );
        assert_eq!(a.port_redirect, 8443);
        assert_eq!(
            a.scheme_rewrite_specifier,
            Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
        );
        assert_eq!(a.response_code, RedirectResponseCode::Found as i32);
        assert_eq!(
            r[0].decorator.as_ref().map(|d| d.operation.as_str()),
            Some("reviews:9080/a")
        );
        let b = redirect(&r[1]);
        assert_eq!(b.port_redirect, 9080);
        assert_eq!(
            b.response_code,
            RedirectResponseCode::MovedPermanently as i32
        );
        let c = redirect(&r[2]);
        assert_eq!(c.port_redirect, 0, "no explicit :80 for http");
        assert_eq!(c.path_rewrite_specifier, None);
        let d = redirect(&r[3]);
        assert_eq!(
            d.path_rewrite_specifier,
            Some(PathRewriteSpecifier::PrefixRewrite("/dd".into()))
        );
        assert_eq!(
            d.response_code,
            RedirectResponseCode::PermanentRedirect as i32
        );
    }

    #[test]
    fn direct_responses() {
        let r = routes(json!({"http": [
            {"match": [{"uri": {"exact": "/s"}}], "directResponse": {"status": 503, "body": {"string": "unavailable"}}},
            {"match": [{"uri": {"exact": "/b"}}], "directResponse": {"status": 200, "body": {"bytes": "aGVsbG8gd29ybGQ="}}},
            {"match": [{"uri": {"exact": "/n"}}], "directResponse": {"status": 204}},
        ]}));
        let direct = |r: &Route| match &r.action {
            Some(Action::DirectResponse(a)) => a.clone(),
            other => panic!("not a direct response: {other:?}"),
        };
        let s = direct(&r[0]);
        assert_eq!(s.status, 503);
        assert_eq!(
            s.body.and_then(|b| b.specifier),
            Some(data_source::Specifier::InlineString("unavailable".into()))
        );
        let b = direct(&r[1]);
        assert_eq!(
            b.body.and_then(|b| b.specifier),
            Some(data_source::Specifier::InlineBytes(b"hello world".to_vec()))
        );
        let n = direct(&r[2]);
        assert_eq!(n.status, 204);
        assert_eq!(n.body, None);
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode_base64("-_8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(decode_base64("Z"), None);
    }

    #[test]
    fn rewrites() {
        let r = routes(json!({"http": [
            {"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new", "authority": "new-host"},
             "route": [{"destination": {"host": "reviews"}}]},
            {"match": [{"uri": {"prefix": "/re"}}], "rewrite": {"uriRegexRewrite": {"match": "^/re/(.*)$", "rewrite": "/\\1"}},
             "route": [{"destination": {"host": "reviews"}}]},
        ]}));
        let a = action(&r[0]);
        assert_eq!(a.prefix_rewrite, "/new");
        assert_eq!(
            a.host_rewrite_specifier,
            Some(HostRewriteSpecifier::HostRewriteLiteral("new-host".into()))
        );
        let b = action(&r[1]);
        assert_eq!(b.prefix_rewrite, "");
        assert_eq!(
            b.regex_rewrite,
            Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher("^/re/(.*)$")),
                substitution: "/\\1".into()
            })
        );
        assert_eq!(b.host_rewrite_specifier, None);
    }

    #[test]
    fn timeouts() {
        let r = routes(
            json!({"http": [{"timeout": "10s", "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        let a = action(&r[0]);
        assert_eq!(a.timeout, secs(10));
        let max_grpc = a
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.grpc_timeout_header_max);
        assert_eq!(max_grpc, secs(10));
        let r = routes(
            json!({"http": [{"timeout": "1.5s", "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        assert_eq!(
            action(&r[0]).timeout,
            Some(PbDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn default_retry_policy() {
        let r = routes(json!({"http": [{"route": [{"destination": {"host": "reviews"}}]}]}));
        let p = action(&r[0]).retry_policy.clone().expect("retry policy");
        assert_eq!(p.num_retries, Some(UInt32Value { value: 2 }));
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(p.retriable_status_codes, [503]);
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert_eq!(p.retry_host_predicate.len(), 1);
        assert_eq!(p.retry_host_predicate[0].name, PREVIOUS_HOSTS_PREDICATE);
        let Some(retry_host_predicate::ConfigType::TypedConfig(any)) =
            &p.retry_host_predicate[0].config_type
        else {
            panic!("typed config expected");
        };
        let _: PreviousHostsPredicate = decode(any);
    }

    #[test]
    fn retries_disabled_with_zero_attempts() {
        let r = routes(
            json!({"http": [{"retries": {"attempts": 0}, "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        assert_eq!(action(&r[0]).retry_policy, None);
    }

    #[test]
    fn custom_retries() {
        let r = routes(json!({"http": [{
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx, 503,gateway-error,999",
                        "retryRemoteLocalities": true, "retryIgnorePreviousHosts": false, "backoff": "25ms"},
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let p = action(&r[0]).retry_policy.clone().expect("retry policy");
        assert_eq!(p.num_retries, Some(UInt32Value { value: 3 }));
        assert_eq!(p.retry_on, "5xx,gateway-error,999,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, [503]);
        assert_eq!(p.per_try_timeout, secs(2));
        assert!(p.retry_host_predicate.is_empty());
        let priority = p.retry_priority.expect("retry priority");
        assert_eq!(priority.name, PREVIOUS_PRIORITIES);
        let Some(retry_priority::ConfigType::TypedConfig(any)) = &priority.config_type else {
            panic!("typed config expected");
        };
        let cfg: PreviousPrioritiesConfig = decode(any);
        assert_eq!(cfg.update_frequency, 2);
        assert_eq!(
            p.retry_back_off.and_then(|b| b.base_interval),
            Some(PbDuration {
                seconds: 0,
                nanos: 25_000_000
            })
        );
        // Only the given retryOn: no status codes, so no retriable-status-codes either.
        let r = routes(
            json!({"http": [{"retries": {"attempts": 1, "retryOn": "connect-failure"},
            "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        let p = action(&r[0]).retry_policy.clone().expect("retry policy");
        assert_eq!(p.retry_on, "connect-failure");
        assert!(p.retriable_status_codes.is_empty());
        assert_eq!(p.retry_host_predicate.len(), 1, "default predicate kept");
    }

    #[test]
    fn consistent_hash_destination() {
        let r = routes(json!({"http": [{"route": [{"destination": {"host": "sticky"}}]}]}));
        let a = action(&r[0]);
        assert_eq!(a.hash_policy, [header_hash("x-user")]);
        let p = a.retry_policy.clone().expect("retry policy");
        assert!(
            p.retry_host_predicate.is_empty(),
            "hashing keeps retries on the same host"
        );
    }

    #[test]
    fn fault_delay_and_abort() {
        let r = routes(json!({"http": [{
            "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10.0}},
                      "abort": {"httpStatus": 500, "percentage": {"value": 0.1}}},
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let f: HttpFault = decode(&r[0].typed_per_filter_config[FAULT_FILTER]);
        let delay = f.delay.expect("delay");
        assert_eq!(
            delay.fault_delay_secifier,
            Some(FaultDelaySecifier::FixedDelay(PbDuration {
                seconds: 5,
                nanos: 0
            }))
        );
        assert_eq!(
            delay.percentage,
            Some(FractionalPercent {
                numerator: 100_000,
                denominator: DenominatorType::Million as i32
            })
        );
        let abort = f.abort.expect("abort");
        assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(500)));
        assert_eq!(
            abort.percentage,
            Some(FractionalPercent {
                numerator: 1000,
                denominator: DenominatorType::Million as i32
            })
        );
    }

    #[test]
    fn fault_legacy_percent_grpc_abort_and_unsupported() {
        let r = routes(json!({"http": [{
            "fault": {"delay": {"fixedDelay": "1s", "percent": 50}, "abort": {"grpcStatus": "UNAVAILABLE"}},
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let f: HttpFault = decode(&r[0].typed_per_filter_config[FAULT_FILTER]);
        assert_eq!(
            f.delay.and_then(|d| d.percentage),
            Some(FractionalPercent {
                numerator: 50,
                denominator: DenominatorType::Hundred as i32
            })
        );
        let abort = f.abort.expect("abort");
        assert_eq!(abort.error_type, Some(ErrorType::GrpcStatus(14)));
        assert_eq!(abort.percentage, None);
        // Exponential delays and HTTP/2 errors cannot be expressed: no fault config.
        let r = routes(json!({"http": [{
            "fault": {"delay": {"exponentialDelay": "1s"}, "abort": {"http2Error": "REFUSED_STREAM"}},
            "route": [{"destination": {"host": "reviews"}}]}]}));
        assert!(r[0].typed_per_filter_config.is_empty());
    }

    #[test]
    fn mirrors() {
        let r = routes(json!({"http": [{
            "mirror": {"host": "reviews", "subset": "shadow"},
            "mirrorPercentage": {"value": 50.0},
            "mirrors": [
                {"destination": {"host": "ratings"}},
                {"destination": {"host": "details"}, "percentage": {"value": 0.0}},
                {"destination": {"host": "productpage"}, "percentage": {"value": 25.5}},
            ],
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let m = &action(&r[0]).request_mirror_policies;
        assert_eq!(m.len(), 3, "the 0% mirror is dropped");
        assert_eq!(
            m[0].cluster,
            "outbound|9080|shadow|reviews.default.svc.cluster.local"
        );
        assert_eq!(
            m[0].runtime_fraction.as_ref().and_then(|f| f.default_value),
            Some(FractionalPercent {
                numerator: 500_000,
                denominator: DenominatorType::Million as i32
            })
        );
        assert_eq!(m[0].trace_sampled, Some(BoolValue { value: false }));
        assert_eq!(
            m[1].cluster,
            "outbound|9080||ratings.default.svc.cluster.local"
        );
        assert_eq!(
            m[1].runtime_fraction.as_ref().and_then(|f| f.default_value),
            Some(integer_fraction(100))
        );
        assert_eq!(
            m[2].runtime_fraction.as_ref().and_then(|f| f.default_value),
            Some(FractionalPercent {
                numerator: 255_000,
                denominator: DenominatorType::Million as i32
            })
        );
        // Deprecated integer percentages, and an explicit 0 that disables mirroring.
        let r = routes(
            json!({"http": [{"mirror": {"host": "reviews"}, "mirrorPercent": 20,
            "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        assert_eq!(
            action(&r[0]).request_mirror_policies[0]
                .runtime_fraction
                .as_ref()
                .and_then(|f| f.default_value),
            Some(integer_fraction(20))
        );
        let r = routes(
            json!({"http": [{"mirror": {"host": "reviews"}, "mirror_percent": 0,
            "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        assert!(action(&r[0]).request_mirror_policies.is_empty());
    }

    #[test]
    fn cors_policy() {
        let r = routes(json!({"http": [{
            "corsPolicy": {
                "allowOrigins": [{"exact": "https://example.com"}, {"regex": ".*\\.example\\.org"}],
                "allowMethods": ["GET", "POST"],
                "allowHeaders": ["x-a", "x-b"],
                "exposeHeaders": ["x-c"],
                "maxAge": "24h",
                "allowCredentials": true,
                "unmatchedPreflights": "IGNORE",
            },
            "route": [{"destination": {"host": "reviews"}}]}]}));
        let c: EnvoyCorsPolicy = decode(&r[0].typed_per_filter_config[CORS_FILTER]);
        assert_eq!(
            c.allow_origin_string_match,
            [
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(
                        "https://example.com".into()
                    )),
                    ignore_case: false
                },
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(
                        ".*\\.example\\.org"
                    ))),
                    ignore_case: false
                },
            ]
        );
        assert_eq!(c.allow_methods, "GET,POST");
        assert_eq!(c.allow_headers, "x-a,x-b");
        assert_eq!(c.expose_headers, "x-c");
        assert_eq!(c.max_age, "86400");
        assert_eq!(c.allow_credentials, Some(BoolValue { value: true }));
        assert_eq!(
            c.forward_not_matching_preflights,
            Some(BoolValue { value: false })
        );
        assert_eq!(
            c.filter_enabled.and_then(|f| f.default_value),
            Some(integer_fraction(100))
        );
        // Deprecated exact origins; preflights forwarded by default.
        let r = routes(
            json!({"http": [{"corsPolicy": {"allowOrigin": ["https://a.com"]},
            "route": [{"destination": {"host": "reviews"}}]}]}),
        );
        let c: EnvoyCorsPolicy = decode(&r[0].typed_per_filter_config[CORS_FILTER]);
        assert_eq!(c.allow_origin_string_match.len(), 1);
        assert_eq!(c.allow_credentials, None);
        assert_eq!(c.max_age, "");
        assert_eq!(
            c.forward_not_matching_preflights,
            Some(BoolValue { value: true })
        );
    }

    #[test]
    fn header_operations_on_rule_and_destination() {
        let r = routes(json!({"http": [{
            "headers": {
                "request": {"set": {"x-b": "2", "x-a": "1", "host": "rewritten"}, "add": {"x-c": "3"}, "remove": ["x-d", ":authority"]},
                "response": {"set": {"x-e": "5"}, "add": {"x-f": "6"}, "remove": ["x-g"]},
            },
            "route": [{"destination": {"host": "reviews"},
                       "headers": {"request": {"add": {"x-dest": "d"}}, "response": {"remove": ["x-h"]}}}]}]}));
        let r = &r[0];
        assert_eq!(
            r.request_headers_to_add,
            [
                header_option("x-a", "1", HeaderAppendAction::OverwriteIfExistsOrAdd),
                header_option("x-b", "2", HeaderAppendAction::OverwriteIfExistsOrAdd),
                header_option("x-c", "3", HeaderAppendAction::AppendIfExistsOrAdd),
                header_option("x-dest", "d", HeaderAppendAction::AppendIfExistsOrAdd),
            ]
        );
        assert_eq!(r.request_headers_to_remove, ["x-d"]);
        assert_eq!(
            r.response_headers_to_add,
            [
                header_option("x-e", "5", HeaderAppendAction::OverwriteIfExistsOrAdd),
                header_option("x-f", "6", HeaderAppendAction::AppendIfExistsOrAdd),
            ]
        );
        assert_eq!(r.response_headers_to_remove, ["x-g", "x-h"]);
        assert_eq!(
            action(r).host_rewrite_specifier,
            Some(HostRewriteSpecifier::HostRewriteLiteral("rewritten".into()))
        );
    }

    #[test]
    fn match_port_filters() {
        let spec = json!({"http": [
            {"match": [{"port": 9080, "uri": {"prefix": "/a"}}, {"port": 80, "uri": {"prefix": "/b"}}],
             "route": [{"destination": {"host": "reviews"}}]},
        ]});
        let r = routes(spec.clone());
        assert_eq!(r.len(), 1);
        assert_eq!(path(&r[0]), &PathSpecifier::Prefix("/a".into()));
        let r = Env {
            port: 80,
            ..Env::default()
        }
        .routes(spec);
        assert_eq!(r.len(), 1);
        assert_eq!(path(&r[0]), &PathSpecifier::Prefix("/b".into()));
    }

    #[test]
    fn match_gateways_filter() {
        let spec = json!({"http": [{"match": [
            {"gateways": ["mesh"], "uri": {"prefix": "/mesh"}},
            {"gateways": ["gw"], "uri": {"prefix": "/short"}},
            {"gateways": ["default/gw"], "uri": {"prefix": "/full"}},
            {"gateways": ["other/gw"], "uri": {"prefix": "/other"}},
            {"gateways": ["gw.default.svc.cluster.local"], "uri": {"prefix": "/legacy"}},
            {"uri": {"prefix": "/any"}},
        ], "route": [{"destination": {"host": "reviews"}}]}]});
        let paths = |r: Vec<Route>| -> Vec<String> {
            r.iter()
                .map(|r| match path(r) {
                    PathSpecifier::Prefix(p) => p.clone(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(paths(routes(spec.clone())), ["/mesh", "/any"]);
        let gw = Env {
            gateway: Some("default/gw"),
            ..Env::default()
        };
        assert_eq!(
            paths(gw.routes(spec)),
            ["/short", "/full", "/legacy", "/any"]
        );
    }

    #[test]
    fn source_labels_and_namespace_filter() {
        let spec = json!({"http": [
            {"match": [{"sourceLabels": {"app": "productpage"}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"match": [{"sourceNamespace": "prod"}], "route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
        ]});
        let subsets = |r: &[Route]| -> Vec<String> {
            r.iter()
                .map(|r| {
                    cluster_of(r)
                        .split('|')
                        .nth(2)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(subsets(&routes(spec.clone())), ["v1"]);
        let pp = Env {
            labels: labels(&[("app", "productpage"), ("version", "v1")]),
            ..Env::default()
        };
        // The selected match is a catch-all for this proxy: nothing follows it.
        assert_eq!(subsets(&pp.routes(spec.clone())), ["v2"]);
        let prod = Env {
            namespace: "prod",
            ..Env::default()
        };
        assert_eq!(subsets(&prod.routes(spec.clone())), ["v3"]);
        // With gateways set, Istio does not look at source labels.
        let spec = json!({"http": [
            {"match": [{"gateways": ["mesh"], "sourceLabels": {"app": "x"}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        ]});
        assert_eq!(subsets(&routes(spec)), ["v2"]);
    }

    #[test]
    fn rule_with_every_match_filtered_yields_nothing() {
        let r = routes(json!({"http": [
            {"match": [{"port": 1}, {"gateways": ["gw"]}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews"}}]},
        ]}));
        assert_eq!(r.len(), 1);
        assert_eq!(cluster_of(&r[0]), REVIEWS);
    }

    #[test]
    fn delegate_rules_merge_with_the_root() {
        let child: VirtualService = serde_json::from_value(json!({"http": [
            {"name": "v2", "match": [{"name": "jason", "uri": {"prefix": "/reviews/v2"}, "headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"name": "conflict", "match": [{"uri": {"prefix": "/ratings"}}],
             "route": [{"destination": {"host": "ratings"}}]},
            {"name": "nested", "delegate": {"name": "again"}},
            {"timeout": "3s", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
        ]}))
        .expect("delegate spec");
        let env = Env {
            delegates: vec![("reviews-delegate", "team", Arc::new(child))],
            ..Env::default()
        };
        let r = env.routes(json!({"hosts": ["reviews"], "http": [
            {"name": "root", "match": [{"name": "m", "uri": {"prefix": "/reviews"}, "headers": {"x-root": {"exact": "1"}}}],
             "timeout": "7s", "mirror": {"host": "shadow"},
             "delegate": {"name": "reviews-delegate", "namespace": "team"}},
            {"name": "missing", "delegate": {"name": "gone"}},
            {"route": [{"destination": {"host": "fallback"}}]},
        ]}));
        assert_eq!(r.len(), 3, "{r:#?}");
        // Child match narrowed within the root's, headers combined.
        assert_eq!(r[0].name, "root-v2.m-jason");
        assert_eq!(path(&r[0]), &PathSpecifier::Prefix("/reviews/v2".into()));
        let names: Vec<_> = route_match(&r[0])
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, ["end-user", "x-root"]);
        // Destinations resolve in the delegate's namespace; the root's mirror in the root's.
        assert_eq!(
            cluster_of(&r[0]),
            "outbound|9080|v2|reviews.team.svc.cluster.local"
        );
        assert_eq!(
            action(&r[0]).request_mirror_policies[0].cluster,
            "outbound|9080||shadow.default.svc.cluster.local"
        );
        // Inherited timeout; metadata names the root VirtualService.
        assert_eq!(action(&r[0]).timeout, secs(7));
        let istio = &r[0].metadata.as_ref().expect("metadata").filter_metadata["istio"];
        assert_eq!(
            istio.fields["config"].kind,
            Some(value::Kind::StringValue(
                "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews".into()
            ))
        );
        // A child rule without matches takes the root's; its own timeout wins.
        assert_eq!(r[1].name, "root.m");
        assert_eq!(path(&r[1]), &PathSpecifier::Prefix("/reviews".into()));
        assert_eq!(
            cluster_of(&r[1]),
            "outbound|9080|v1|reviews.team.svc.cluster.local"
        );
        assert_eq!(action(&r[1]).timeout, secs(3));
        // The conflicting, nested and missing delegates yield nothing; the fallback follows.
        assert_eq!(
            cluster_of(&r[2]),
            "outbound|9080||fallback.default.svc.cluster.local"
        );
    }

    #[test]
    fn match_merge_conflicts() {
        let sm = |k: &str, v: &str| -> StringMatch {
            serde_json::from_value(json!({ k: v })).expect("string match")
        };
        let uri = |s: StringMatch| HttpMatchRequest {
            uri: Some(s),
            ..Default::default()
        };
        let root = [uri(sm("prefix", "/a"))];
        assert!(merge_matches(&root, &[uri(sm("prefix", "/a/b"))]).is_some());
        assert!(merge_matches(&root, &[uri(sm("exact", "/a/c"))]).is_some());
        assert!(merge_matches(&root, &[uri(sm("prefix", "/b"))]).is_none());
        assert!(merge_matches(&root, &[uri(sm("regex", "/a.*"))]).is_none());
        let root = [uri(sm("exact", "/a"))];
        assert!(merge_matches(&root, &[uri(sm("exact", "/a"))]).is_some());
        assert!(merge_matches(&root, &[uri(sm("prefix", "/a"))]).is_none());
        // One compatible root match is enough; every child match needs one.
        let root = [uri(sm("prefix", "/a")), uri(sm("prefix", "/b"))];
        let merged = merge_matches(&root, &[uri(sm("prefix", "/b/1"))]).expect("merges");
        assert_eq!(merged.len(), 1);
        assert!(
            merge_matches(&root, &[uri(sm("prefix", "/b/1")), uri(sm("prefix", "/c"))]).is_none()
        );
        // Ports and source labels must agree.
        let port = |p: u32| HttpMatchRequest {
            port: Some(p),
            ..Default::default()
        };
        assert!(merge_matches(&[port(80)], &[port(81)]).is_none());
        let merged = merge_matches(&[port(80)], &[uri(sm("prefix", "/x"))]).expect("merges");
        assert_eq!(merged[0].port, Some(80));
    }

    #[test]
    fn default_route_is_istios() {
        let r = default_route(REVIEWS, vec![header_hash("x-user")]);
        assert_eq!(r.name, "default");
        assert_eq!(r.r#match, Some(prefix_match("/")));
        assert_eq!(cluster_of(&r), REVIEWS);
        let a = action(&r);
        assert_eq!(a.timeout, secs(0));
        let max_grpc = a
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.grpc_timeout_header_max);
        assert_eq!(max_grpc, secs(0));
        assert_eq!(a.retry_policy, retry_policy(None, false));
        assert_eq!(a.hash_policy, [header_hash("x-user")]);
        assert_eq!(
            r.decorator.map(|d| d.operation),
            Some("reviews.default.svc.cluster.local:9080/*".to_string())
        );
    }

    #[test]
    fn bookinfo_jason_sample() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"
        );
        let text = std::fs::read_to_string(file).expect("bookinfo sample");
        let docs = parse_documents(Path::new(file), &text, "default", "cluster.local");
        let vs = docs
            .iter()
            .find_map(|d| match &d.object {
                Some(Object::VirtualService(c)) => Some(c.clone()),
                _ => None,
            })
            .expect("a VirtualService");
        assert_eq!(vs.name(), "reviews");
        let r = Env::default().routes_of(&vs.spec);
        assert_eq!(r.len(), 2);
        let h = &route_match(&r[0]).headers;
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].name, "end-user");
        assert_eq!(h[0].header_match_specifier, exact("jason"));
        assert_eq!(path(&r[0]), &PathSpecifier::Prefix("/".into()));
        assert_eq!(
            cluster_of(&r[0]),
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        );
        assert!(is_catch_all(&r[1]));
        assert_eq!(
            cluster_of(&r[1]),
            "outbound|9080|v3|reviews.default.svc.cluster.local"
        );
    }
}
