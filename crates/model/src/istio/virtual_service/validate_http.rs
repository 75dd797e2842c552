//! Validation of a VirtualService's HTTP routes: what a rule does (route, redirect,
//! direct response, delegate), its matches, CORS, faults, mirrors, retries and rewrites.

use crate::istio::FieldIssue;
use crate::istio::common::Destination;
use crate::istio::refs::{
    decode_base64, is_authority_header, is_known_http_status, jwt_routing_claim,
};
use crate::istio::validate::{
    MILLISECOND, check_duration, check_header_name, check_header_name_case, check_labels,
    check_percent_int, check_percent_value, check_port, check_regex, error, is_dns1123_label,
    is_dns1123_subdomain, set_names, warning,
};

use super::validate::{
    CORS_METHODS, GRPC_STATUSES, RETRY_ON_POLICIES, check_destination, check_gateway_names,
    check_header_ops, check_string_match, check_weighted_destinations,
};
use super::{
    CorsPolicy, Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, HttpRoute,
};

pub(super) fn check_http_route(
    out: &mut Vec<FieldIssue>,
    p: &str,
    r: &HttpRoute,
    delegate_vs: bool,
) {
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

pub(super) fn check_source_namespace(out: &mut Vec<FieldIssue>, mp: &str, ns: Option<&str>) {
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
pub(super) fn check_no_jwt_claim_routes(out: &mut Vec<FieldIssue>, p: &str, r: &HttpRoute) {
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
        match crate::istio::validate::validate_duration(&f, age, MILLISECOND) {
            Some(issue) => out.push(issue),
            None => {
                let nanos = crate::istio::validate::parse_duration_nanos(age).unwrap_or(0);
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
