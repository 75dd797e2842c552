//! Tests of HTTP route generation, through `http_routes` and the parts it is made of.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, data_source};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    retry_host_predicate, retry_priority,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    Header as HashHeader, PolicySpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
    value_matcher,
};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration as PbDuration, UInt32Value, value,
};
use isthmus_model::istio::VirtualService;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::refs::{MESH_GATEWAY, Source};
use isthmus_model::istio::virtual_service::{HttpMatchRequest, StringMatch};
use isthmus_model::{Object, parse_documents};
use prost::{Message, Name};
use serde_json::json;

use super::actions::*;
use super::delegate::*;
use super::matching::*;
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
            source: Source {
                gateway: self.gateway.unwrap_or(MESH_GATEWAY),
                labels: &self.labels,
                namespace: self.namespace,
            },
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

/// A case-sensitive string matcher.
fn matcher(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

fn exact(s: &str) -> Option<HeaderMatchSpecifier> {
    Some(HeaderMatchSpecifier::StringMatch(matcher(
        string_matcher::MatchPattern::Exact(s.into()),
    )))
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
        Some(HeaderMatchSpecifier::StringMatch(matcher(
            string_matcher::MatchPattern::Prefix("pre".into())
        )))
    );
    assert_eq!(
        h[2].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(matcher(
            string_matcher::MatchPattern::SafeRegex(regex_matcher("v[0-9]"))
        )))
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
        Some(QueryParameterMatchSpecifier::StringMatch(matcher(
            string_matcher::MatchPattern::Exact("1".into())
        )))
    );
    assert_eq!(
        q[1].query_parameter_match_specifier,
        Some(QueryParameterMatchSpecifier::StringMatch(matcher(
            string_matcher::MatchPattern::Prefix("x".into())
        )))
    );
    assert_eq!(
        q[2].query_parameter_match_specifier,
        Some(QueryParameterMatchSpecifier::StringMatch(matcher(
            string_matcher::MatchPattern::SafeRegex(regex_matcher("[0-9]+"))
        )))
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
            matcher(string_matcher::MatchPattern::Exact(
                "https://example.com".into()
            )),
            matcher(string_matcher::MatchPattern::SafeRegex(regex_matcher(
                ".*\\.example\\.org"
            ))),
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
    // An empty sourceNamespace is any namespace, as an unset one.
    let any_ns = json!({"http": [
        {"match": [{"sourceNamespace": ""}], "route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
    ]});
    assert_eq!(subsets(&routes(any_ns)), ["v3"]);
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
    assert!(merge_matches(&root, &[uri(sm("prefix", "/b/1")), uri(sm("prefix", "/c"))]).is_none());
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
