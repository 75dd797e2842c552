//! Validation of a VirtualService: the `ValidateSpec` impl and the checks shared by
//! its HTTP, TLS and TCP routes (gateway names, string matches, header operations,
//! destinations and weights), the TLS and TCP route checks, and unreachable-rule warnings.
//! The HTTP route checks are in `validate_http`.

use crate::istio::common::Destination;
use crate::istio::refs::{
    MESH_GATEWAY, binds_mesh, host_subset_of, hosts_overlap, legacy_gateway_name,
};
use crate::istio::validate::{
    check_export_to, check_labels, check_port, check_regex, error, is_dns1123_label, is_ip,
    set_names, validate_fqdn, validate_ip_subnet, validate_wildcard_domain, warning,
};
use crate::istio::{FieldIssue, ValidateSpec, ValidationContext};

use super::validate_http::{check_http_route, check_no_jwt_claim_routes, check_source_namespace};
use super::{
    Headers, HttpMatchRequest, HttpRoute, StringMatch, TcpRoute, TlsRoute, VirtualService,
};

/// Envoy retry policies Istio accepts in `retryOn` (besides HTTP status codes).
pub(super) const RETRY_ON_POLICIES: &[&str] = &[
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

pub(super) const CORS_METHODS: &[&str] = &[
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
pub(super) fn check_gateway_names(out: &mut Vec<FieldIssue>, field: &str, names: &[String]) {
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
pub(super) fn check_string_match(
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

pub(super) fn check_header_ops(out: &mut Vec<FieldIssue>, field: &str, h: &Headers) {
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
pub(super) fn check_weighted_destinations(
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
