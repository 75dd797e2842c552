//! Istio's rules for what config refers to and whom it applies to, in one place for
//! validation, `isthmus analyze` and config generation: gateway names in
//! VirtualServices, source matches (`gateways`, `sourceLabels`, `sourceNamespace`,
//! `port`), wildcard hosts, `exportTo`, `[namespace/]host` references, the headers
//! that name the authority, JWT-claim routing headers, the HTTP status codes Istio
//! knows, and protobuf JSON `bytes`.

use std::collections::BTreeMap;
use std::fmt;

use super::virtual_service::{HttpMatchRequest, L4MatchAttributes, TlsMatchAttributes};

/// Istio's name for the sidecars' pseudo-gateway (`constants.IstioMeshGateway`).
pub const MESH_GATEWAY: &str = "mesh";

// ---------------------------------------------------------------------------
// Gateway names

/// A VirtualService's gateway reference, resolved: `mesh`, or a Gateway by namespace and
/// name. Displays as Istio spells the resolved name (`mesh`, `namespace/name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayRef<'a> {
    Mesh,
    Gateway { namespace: &'a str, name: &'a str },
}

impl<'a> GatewayRef<'a> {
    /// Istio's `resolveGatewayName` (pilot/pkg/model/virtualservice.go), applied by
    /// `resolveVirtualServiceShortnames` to every name but `mesh`: `namespace/name` stays;
    /// `./name` and a bare `name` are in the VirtualService's `namespace`; a name with
    /// dots is the legacy `name.namespace[.svc.DOMAIN]` form.
    pub fn resolve(gateway: &'a str, namespace: &'a str) -> Self {
        if gateway == MESH_GATEWAY {
            return Self::Mesh;
        }
        let (namespace, name) = match gateway.split_once('/') {
            Some((".", name)) => (namespace, name),
            Some(qualified) => qualified,
            None => legacy_gateway_name(gateway).unwrap_or((namespace, gateway)),
        };
        Self::Gateway { namespace, name }
    }

    /// Whether this is the gateway named `resolved` (`namespace/name`, or `mesh`).
    pub fn is(&self, resolved: &str) -> bool {
        match self {
            Self::Mesh => resolved == MESH_GATEWAY,
            Self::Gateway { namespace, name } => {
                resolved.split_once('/') == Some((*namespace, *name))
            }
        }
    }
}

impl fmt::Display for GatewayRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mesh => f.write_str(MESH_GATEWAY),
            Self::Gateway { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

/// [`GatewayRef::resolve`] as Istio's string: `mesh` or `namespace/name`.
pub fn resolve_gateway_name(gateway: &str, namespace: &str) -> String {
    GatewayRef::resolve(gateway, namespace).to_string()
}

/// The legacy `name.namespace` or `name.namespace.svc.DOMAIN` form of a gateway name,
/// as (namespace, name); `None` for a name without dots or with a `/`.
pub fn legacy_gateway_name(gateway: &str) -> Option<(&str, &str)> {
    if gateway.contains('/') {
        return None;
    }
    let (name, rest) = gateway.split_once('.')?;
    let namespace = rest.split_once('.').map_or(rest, |(ns, _)| ns);
    Some((namespace, name))
}

/// The gateways a VirtualService binds to, resolved in its `namespace`: its `gateways`,
/// or `mesh` when it names none.
pub fn bound_gateways(gateways: &[String], namespace: &str) -> Vec<String> {
    if gateways.is_empty() {
        return vec![MESH_GATEWAY.to_string()];
    }
    gateways
        .iter()
        .map(|g| resolve_gateway_name(g, namespace))
        .collect()
}

/// Whether a VirtualService with these `gateways` applies to sidecars.
pub fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY)
}

// ---------------------------------------------------------------------------
// Source matches

/// Istio's `labels.Instance.SubsetOf`: every label of `subset` is in `labels` with the
/// same value (an empty subset is in anything).
pub fn labels_subset_of(
    subset: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    subset.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A match's `port`: unset or 0 is any port, else the listener's port.
pub fn port_matches(port: Option<u32>, listener_port: u16) -> bool {
    port.is_none_or(|p| p == 0 || p == u32::from(listener_port))
}

/// What a match asks of the source: HTTP, TCP and TLS matches alike.
#[derive(Clone, Copy, Debug)]
pub struct SourceMatch<'a> {
    /// As written, resolved in the VirtualService's namespace when compared.
    pub gateways: &'a [String],
    pub labels: &'a BTreeMap<String, String>,
    /// Unset or empty: any namespace.
    pub namespace: Option<&'a str>,
}

impl<'a> From<&'a HttpMatchRequest> for SourceMatch<'a> {
    fn from(m: &'a HttpMatchRequest) -> Self {
        Self {
            gateways: &m.gateways,
            labels: &m.source_labels,
            namespace: m.source_namespace.as_deref(),
        }
    }
}

impl<'a> From<&'a L4MatchAttributes> for SourceMatch<'a> {
    fn from(m: &'a L4MatchAttributes) -> Self {
        Self {
            gateways: &m.gateways,
            labels: &m.source_labels,
            namespace: m.source_namespace.as_deref(),
        }
    }
}

impl<'a> From<&'a TlsMatchAttributes> for SourceMatch<'a> {
    fn from(m: &'a TlsMatchAttributes) -> Self {
        Self {
            gateways: &m.gateways,
            labels: &m.source_labels,
            namespace: m.source_namespace.as_deref(),
        }
    }
}

/// Whom routes are made for: the gateway they serve (`namespace/name`, or `mesh` for
/// sidecars) and the proxy's workload labels and namespace.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub gateway: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub namespace: &'a str,
}

impl Source<'_> {
    /// Istio's `sourceMatchHTTP` (pilot/pkg/networking/core/route/route.go): a match
    /// naming `gateways` applies when one of them is this source's gateway, whatever the
    /// labels and namespace; otherwise its `sourceLabels` must be among the proxy's and
    /// its `sourceNamespace`, when set and not empty, the proxy's namespace.
    /// `vs_namespace` resolves the gateway names.
    pub fn matches_http(&self, m: SourceMatch<'_>, vs_namespace: &str) -> bool {
        if m.gateways.is_empty() {
            self.labels_and_namespace_match(m)
        } else {
            self.gateway_listed(m.gateways, vs_namespace)
        }
    }

    /// Istio's `matchTCP` and `matchTLS` (pilot/pkg/networking/core/tls.go), the port
    /// aside: `gateways` (none: any), `sourceLabels` and `sourceNamespace` (unset or
    /// empty: any) must all hold.
    pub fn matches_l4(&self, m: SourceMatch<'_>, vs_namespace: &str) -> bool {
        (m.gateways.is_empty() || self.gateway_listed(m.gateways, vs_namespace))
            && self.labels_and_namespace_match(m)
    }

    fn gateway_listed(&self, gateways: &[String], vs_namespace: &str) -> bool {
        gateways
            .iter()
            .any(|g| GatewayRef::resolve(g, vs_namespace).is(self.gateway))
    }

    fn labels_and_namespace_match(&self, m: SourceMatch<'_>) -> bool {
        labels_subset_of(m.labels, self.labels)
            && m.namespace
                .is_none_or(|ns| ns.is_empty() || ns == self.namespace)
    }
}

// ---------------------------------------------------------------------------
// Hosts and visibility

/// Istio's `host.Name.Matches`: whether two (possibly wildcard) hosts overlap.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() < sb.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: whether every host `a` matches is matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (None, Some(sb)) => a.ends_with(sb),
        _ => false,
    }
}

/// Istio's `exportTo` rule for config objects: empty or `*` is everywhere, `.` the
/// object's own namespace, otherwise the listed namespaces.
pub fn export_visible(export_to: &[String], own: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && own == namespace) || e == namespace)
}

/// A `[namespace/]host` of a Gateway server or Sidecar listener, split: (the
/// namespace as written, if any, and the host).
pub fn split_namespaced_host(h: &str) -> (Option<&str>, &str) {
    match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    }
}

// ---------------------------------------------------------------------------
// Headers and status codes

/// Istio's `isInternalHeader` (pkg/config/validation/virtualservice.go): pseudo-headers
/// and `Host`, which header operations cannot change.
pub fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Istio's `isAuthorityHeader`: `:authority` or `Host`, whose value a request header
/// operation turns into a host rewrite.
pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// The header name prefix that routes on JWT claims (`jwt.HeaderJWTClaim`).
pub const JWT_CLAIM_HEADER: &str = "@request.auth.claims";

/// Istio's `jwt.ToRoutingClaim` (pkg/jwt/routing.go): the claim path of a
/// `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` header name (prefix in
/// any case); `None` for other names.
pub fn jwt_routing_claim(header: &str) -> Option<Vec<&str>> {
    let prefix = header.get(..JWT_CLAIM_HEADER.len())?;
    if !prefix.eq_ignore_ascii_case(JWT_CLAIM_HEADER) {
        return None;
    }
    let rest = &header[JWT_CLAIM_HEADER.len()..];
    if let Some(dotted) = rest.strip_prefix('.').filter(|s| !s.is_empty()) {
        return Some(dotted.split('.').collect());
    }
    if rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']') {
        return Some(rest[1..rest.len() - 1].split("][").collect());
    }
    None
}

/// HTTP status codes Go's `http.StatusText` knows: what Istio accepts as a status code
/// in `retryOn` and sends as `retriable_status_codes`.
pub fn is_known_http_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428
        | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

/// A protobuf JSON `bytes` value (`directResponse.body.bytes`): standard or URL-safe
/// base64, padding optional. `None` when it is not base64.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(g: &str) -> String {
        resolve_gateway_name(g, "default")
    }

    #[test]
    fn gateway_names_resolve_like_istio() {
        assert_eq!(resolve("mesh"), "mesh");
        assert_eq!(resolve("gw"), "default/gw");
        assert_eq!(resolve("istio-system/gw"), "istio-system/gw");
        assert_eq!(resolve("./gw"), "default/gw");
        assert_eq!(resolve("gw.istio-system"), "istio-system/gw");
        assert_eq!(
            resolve("gw.istio-system.svc.cluster.local"),
            "istio-system/gw"
        );
        // Only the first `/` splits; a `.` namespace only before it.
        assert_eq!(resolve("ns/gw.x"), "ns/gw.x");
        assert_eq!(resolve("a/./b"), "a/./b");
        // Degenerate names resolve as Istio's string operations would.
        assert_eq!(resolve("gw."), "/gw");
        assert_eq!(resolve(".ns"), "ns/");
        assert_eq!(resolve("/gw"), "/gw");
        assert_eq!(resolve("./mesh"), "default/mesh");
        assert_eq!(
            GatewayRef::resolve("gw.ns.svc.cluster.local", "x"),
            GatewayRef::Gateway {
                namespace: "ns",
                name: "gw"
            }
        );
    }

    #[test]
    fn legacy_names_are_those_with_dots_and_no_slash() {
        assert_eq!(legacy_gateway_name("gw.ns"), Some(("ns", "gw")));
        assert_eq!(
            legacy_gateway_name("gw.ns.svc.cluster.local"),
            Some(("ns", "gw"))
        );
        assert_eq!(legacy_gateway_name("gw"), None);
        assert_eq!(legacy_gateway_name("ns/gw.x"), None);
        assert_eq!(legacy_gateway_name("mesh"), None);
    }

    #[test]
    fn a_resolved_reference_is_compared_with_a_resolved_name() {
        let r = GatewayRef::resolve("gw.ns.svc.cluster.local", "default");
        assert!(r.is("ns/gw"));
        assert!(!r.is("default/gw"));
        assert!(!r.is("ns/gw2"));
        assert!(!r.is("mesh"));
        assert!(GatewayRef::resolve("mesh", "default").is("mesh"));
        assert!(!GatewayRef::resolve("mesh", "default").is("default/mesh"));
        // Resolving a resolved name changes nothing.
        for g in ["mesh", "ns/gw", "./gw", "gw", "gw.ns.svc.cluster.local"] {
            let once = resolve(g);
            assert_eq!(resolve(&once), once, "{g}");
            assert!(GatewayRef::resolve(g, "default").is(&once), "{g}");
        }
    }

    #[test]
    fn bound_gateways_default_to_mesh() {
        assert_eq!(bound_gateways(&[], "default"), vec!["mesh"]);
        let gws = ["mesh".to_string(), "gw.ns".to_string(), "./a".to_string()];
        assert_eq!(
            bound_gateways(&gws, "default"),
            vec!["mesh", "ns/gw", "default/a"]
        );
        assert!(binds_mesh(&[]));
        assert!(binds_mesh(&gws));
        assert!(!binds_mesh(&["gw".to_string()]));
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_subset_and_ports() {
        let proxy = labels(&[("app", "a"), ("version", "v1")]);
        assert!(labels_subset_of(&labels(&[]), &proxy));
        assert!(labels_subset_of(&labels(&[("app", "a")]), &proxy));
        assert!(!labels_subset_of(&labels(&[("app", "b")]), &proxy));
        assert!(!labels_subset_of(&labels(&[("team", "x")]), &proxy));
        assert!(port_matches(None, 80));
        assert!(port_matches(Some(0), 80));
        assert!(port_matches(Some(80), 80));
        assert!(!port_matches(Some(81), 80));
    }

    #[test]
    fn source_namespace_empty_or_unset_is_any_namespace() {
        let proxy = labels(&[("app", "a")]);
        let src = Source {
            gateway: MESH_GATEWAY,
            labels: &proxy,
            namespace: "prod",
        };
        let none = BTreeMap::new();
        let m = |namespace| SourceMatch {
            gateways: &[],
            labels: &none,
            namespace,
        };
        for check in [Source::matches_http, Source::matches_l4] {
            assert!(check(&src, m(None), "default"));
            assert!(check(&src, m(Some("")), "default"));
            assert!(check(&src, m(Some("prod")), "default"));
            assert!(!check(&src, m(Some("dev")), "default"));
        }
    }

    #[test]
    fn http_gateways_decide_alone_l4_gateways_and_labels_together() {
        let proxy = labels(&[("app", "gw")]);
        let src = Source {
            gateway: "istio-system/ingress",
            labels: &proxy,
            namespace: "istio-system",
        };
        let other = labels(&[("app", "curl")]);
        let legacy = ["ingress.istio-system.svc.cluster.local".to_string()];
        let m = SourceMatch {
            gateways: &legacy,
            labels: &other,
            namespace: Some("default"),
        };
        // HTTP: the gateway is listed, so labels and namespace are not looked at.
        assert!(src.matches_http(m, "default"));
        // TCP/TLS: all must hold.
        assert!(!src.matches_l4(m, "default"));
        let m = SourceMatch {
            labels: &proxy,
            namespace: None,
            ..m
        };
        assert!(src.matches_l4(m, "default"));
        // A gateway not listed.
        let elsewhere = ["ingress".to_string()];
        let m = SourceMatch {
            gateways: &elsewhere,
            ..m
        };
        assert!(!src.matches_http(m, "default"));
        assert!(!src.matches_l4(m, "default"));
        assert!(src.matches_http(m, "istio-system"));
        // Sidecars are `mesh`.
        let sidecar = Source {
            gateway: MESH_GATEWAY,
            ..src
        };
        let mesh = ["mesh".to_string()];
        let m = SourceMatch {
            gateways: &mesh,
            ..m
        };
        assert!(sidecar.matches_http(m, "default"));
        assert!(!src.matches_http(m, "default"));
    }

    #[test]
    fn hosts() {
        assert!(hosts_overlap("*.foo.com", "a.foo.com"));
        assert!(hosts_overlap("*.com", "*.foo.com"));
        assert!(!hosts_overlap("a.foo.com", "b.foo.com"));
        assert!(hosts_overlap("*", "a.foo.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
        assert!(host_subset_of("*", "*"));
        assert!(host_subset_of("a.foo.com", "*"));
        assert_eq!(split_namespaced_host("./a.com"), (Some("."), "a.com"));
        assert_eq!(split_namespaced_host("*/a.com"), (Some("*"), "a.com"));
        assert_eq!(split_namespaced_host("a.com"), (None, "a.com"));
    }

    #[test]
    fn export_to() {
        let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(export_visible(&[], "a", "b"));
        assert!(export_visible(&e(&["*"]), "a", "b"));
        assert!(export_visible(&e(&["."]), "a", "a"));
        assert!(!export_visible(&e(&["."]), "a", "b"));
        assert!(export_visible(&e(&["b"]), "a", "b"));
        assert!(!export_visible(&e(&["c"]), "a", "b"));
    }

    #[test]
    fn headers_claims_statuses_bytes() {
        assert!(is_authority_header("Host"));
        assert!(is_authority_header(":Authority"));
        assert!(!is_authority_header(":path"));
        assert!(is_internal_header(":path"));
        assert!(is_internal_header("HOST"));
        assert!(!is_internal_header("x-host"));
        assert_eq!(
            jwt_routing_claim("@request.auth.claims.a.b"),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            jwt_routing_claim("@Request.Auth.Claims[a.b][c]"),
            Some(vec!["a.b", "c"])
        );
        assert_eq!(jwt_routing_claim("@request.auth.claims."), None);
        assert_eq!(jwt_routing_claim("@request.auth.claims[]"), None);
        assert_eq!(jwt_routing_claim("@request.auth.claimsx"), None);
        assert_eq!(jwt_routing_claim("x-user"), None);
        assert!(is_known_http_status(503));
        assert!(is_known_http_status(418));
        assert!(!is_known_http_status(509));
        assert!(!is_known_http_status(600));
    }

    #[test]
    fn base64_like_protobuf_json() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode_base64("-_8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(decode_base64("Z"), None);
    }
}
