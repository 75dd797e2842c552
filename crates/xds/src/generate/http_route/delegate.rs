//! Rules of delegate VirtualServices merged into their parents' (Istio's merge in
//! `pilot/pkg/model/virtualservice.go`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use isthmus_model::istio::VirtualService;
use isthmus_model::istio::refs::resolve_gateway_name;
use isthmus_model::istio::virtual_service::{HttpMatchRequest, HttpRoute, StringMatch};
use tracing::{debug, warn};

use super::{HttpContext, Rule};

/// The VirtualService's rules with delegates expanded in place.
pub(super) fn flatten_rules<'a>(
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
pub(super) fn merge_rule(root: &HttpRoute, child: &HttpRoute) -> HttpRoute {
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
pub(super) fn merge_names(root: Option<&str>, child: Option<&str>) -> Option<String> {
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
pub(super) fn inherit<T: Clone>(own: &mut Option<T>, root: &Option<T>) {
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
pub(super) fn merge_matches(
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
pub(super) fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> HttpMatchRequest {
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
pub(super) fn match_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
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
pub(super) fn string_match_conflict(
    root: Option<&StringMatch>,
    leaf: Option<&StringMatch>,
) -> bool {
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
pub(super) fn resolve_match_gateways(
    matches: &[HttpMatchRequest],
    namespace: &str,
) -> Vec<HttpMatchRequest> {
    matches
        .iter()
        .map(|m| {
            let mut m = m.clone();
            for g in &mut m.gateways {
                *g = resolve_gateway_name(g, namespace);
            }
            m
        })
        .collect()
}
