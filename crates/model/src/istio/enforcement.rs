//! What Isthmus accepts of Istio's configuration but does not act on yet.
//!
//! [`not_enforced`] lists, for one parsed object, each field it sets that config
//! generation and the registry do not honour yet, saying what an Istio user would
//! expect and what Isthmus does instead. This is the one list of these rules:
//! `isthmus analyze` reports each entry as an ISM0007 finding, and the registry logs
//! each when it applies a config object. A field leaves the list when it is built.
//!
//! A field is listed only when it is set to something that makes a difference: an
//! explicit `enabled: false`, `TLS_AUTO` or an empty list asks for what Isthmus does
//! anyway. Fields Istio itself ignores (Gateway `defaultEndpoint`, VirtualService tcp
//! `sourceSubnet`, port `targetPort` on Gateways) are not listed; fields Istio's
//! webhook rejects (fault `exponentialDelay`, abort `http2Error`) are rejected by
//! validation instead.

use crate::Object;
use crate::Protocol;
use crate::istio::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::istio::gateway::{
    Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocolVersion,
};
use crate::istio::service_entry::{Location, Resolution, ServiceEntry, ServicePort};
use crate::istio::sidecar::Sidecar;
use crate::istio::virtual_service::VirtualService;
use crate::istio::workload_entry::WorkloadEntry;

/// One field an object sets that Isthmus does not enforce yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NotEnforced {
    /// Path from the document root, e.g. `spec.subsets[0].trafficPolicy.tunnel`.
    pub field: String,
    /// `accepted, not enforced yet: KIND FIELD: what Istio does; what Isthmus does`.
    pub message: String,
}

/// The fields of `object` that Isthmus accepts but does not enforce yet, in a fixed
/// order. Empty for objects that use only what Isthmus enforces, and for kinds other
/// than Istio's.
pub fn not_enforced(object: &Object) -> Vec<NotEnforced> {
    let mut n = Notes {
        kind: object.kind().name(),
        list: Vec::new(),
    };
    match object {
        Object::VirtualService(o) => virtual_service(&mut n, &o.spec),
        Object::DestinationRule(o) => destination_rule(&mut n, &o.spec),
        Object::Gateway(o) => gateway(&mut n, &o.spec),
        Object::ServiceEntry(o) => service_entry(&mut n, &o.spec),
        Object::WorkloadEntry(o) => workload_entry(&mut n, "spec", &o.spec),
        Object::Sidecar(o) => sidecar(&mut n, &o.spec),
        // Enforced: composed per workload and port for the inbound listener and the
        // endpoints' mTLS (crates/xds generate/mtls.rs and sidecar.rs).
        Object::PeerAuthentication(_) => {}
        _ => {}
    }
    n.list
}

/// The entries being collected for one object.
struct Notes {
    kind: &'static str,
    list: Vec<NotEnforced>,
}

impl Notes {
    /// `field` is the path of this object's field; `family` names the field the way the
    /// README's table does (the same for every object of the kind).
    fn add(&mut self, field: impl Into<String>, family: &str, what: &str) {
        self.list.push(NotEnforced {
            field: field.into(),
            message: format!("accepted, not enforced yet: {} {family}: {what}", self.kind),
        });
    }
}

/// What Isthmus does for traffic to a destination it has no listener for.
const UNKNOWN_DESTINATION: &str = "handled as traffic to an unknown destination (passed through, or dropped under outboundTrafficPolicy REGISTRY_ONLY)";

// ---------------------------------------------------------------------------
// VirtualService

fn virtual_service(n: &mut Notes, vs: &VirtualService) {
    // Istio's PushContext.initVirtualServices indexes gateway VirtualServices by the
    // namespaces they are exported to as well; Isthmus honours exportTo for sidecars only.
    let exported_everywhere = vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*");
    if !exported_everywhere && vs.gateways.iter().any(|g| g != "mesh") {
        n.add(
            "spec.exportTo",
            "exportTo (on gateways)",
            "Istio applies the VirtualService only to gateway proxies in the namespaces it is exported to; Isthmus applies it to every gateway it names (exportTo is honoured for sidecars)",
        );
    }
    // Istio's buildSidecarOutboundTLSFilterChainOpts and
    // buildSidecarOutboundTCPFilterChainOpts (pilot/pkg/networking/core/tls.go) match
    // destinationSubnets on the connection. (sourceLabels and sourceNamespace are
    // enforced: istio::refs::Source::matches_l4.)
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            let p = format!("spec.tls[{i}].match[{j}]");
            if !m.destination_subnets.is_empty() {
                destination_subnets(n, &format!("{p}.destinationSubnets"), "tls");
            }
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            if !m.destination_subnets.is_empty() {
                let p = format!("spec.tcp[{i}].match[{j}].destinationSubnets");
                destination_subnets(n, &p, "tcp");
            }
        }
    }
}

fn destination_subnets(n: &mut Notes, field: &str, rules: &str) {
    n.add(
        field,
        &format!("{rules}.match.destinationSubnets"),
        "Istio applies the rule only to connections to these address ranges; Isthmus ignores the condition: the rule applies to every connection the rest of the match selects",
    );
}

// ---------------------------------------------------------------------------
// DestinationRule

fn destination_rule(n: &mut Notes, dr: &DestinationRule) {
    if dr.workload_selector.is_some() {
        n.add(
            "spec.workloadSelector",
            "workloadSelector",
            "Istio applies the rule to the outbound traffic of the selected workloads in its namespace; Isthmus applies this rule on no proxy at all (another rule for the host, if any, applies instead)",
        );
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(n, "spec.trafficPolicy", tp);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(n, &format!("spec.subsets[{i}].trafficPolicy"), tp);
        }
    }
}

/// A traffic policy of the rule or a subset, with its port-level settings.
fn traffic_policy(n: &mut Notes, p: &str, tp: &TrafficPolicy) {
    policy_groups(
        n,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        policy_groups(
            n,
            &format!("{p}.portLevelSettings[{i}]"),
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
    if tp.tunnel.is_some() {
        n.add(
            format!("{p}.tunnel"),
            "trafficPolicy.tunnel",
            "Istio tunnels TCP connections to the host through the HTTP proxy at targetHost:targetPort (CONNECT or POST); Isthmus connects to the host directly",
        );
    }
    if tp.proxy_protocol.is_some() {
        n.add(
            format!("{p}.proxyProtocol"),
            "trafficPolicy.proxyProtocol",
            "Istio sends a PROXY protocol header on each upstream connection; Isthmus sends none",
        );
    }
    if tp.retry_budget.is_some() {
        n.add(
            format!("{p}.retryBudget"),
            "trafficPolicy.retryBudget",
            "Istio limits concurrent retries to a share of the active requests; Isthmus sets no retry budget (retries are limited only by connectionPool.http.maxRetries)",
        );
    }
}

/// The four groups a policy has at every level (rule, subset, port).
fn policy_groups(
    n: &mut Notes,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(n, &format!("{p}.loadBalancer"), lb);
    }
    if pool
        .and_then(|c| c.http.as_ref())
        .is_some_and(|h| h.http2_keep_alive.is_some())
    {
        n.add(
            format!("{p}.connectionPool.http.http2KeepAlive"),
            "connectionPool.http.http2KeepAlive",
            "Istio sends HTTP/2 PING frames on upstream connections and closes those that do not answer; Isthmus sends no pings",
        );
    }
    if outlier.is_some_and(|o| !o.outlier_detection_http_error_codes.is_empty()) {
        n.add(
            format!("{p}.outlierDetection.outlierDetectionHttpErrorCodes"),
            "outlierDetection.outlierDetectionHttpErrorCodes",
            "Istio counts responses with these status codes as errors for ejection; Isthmus counts only 5xx and gateway errors (consecutive5xxErrors, consecutiveGatewayErrors)",
        );
    }
    if let Some(tls) = tls {
        client_tls(n, &format!("{p}.tls"), tls);
    }
}

fn load_balancer(n: &mut Notes, p: &str, lb: &LoadBalancerSettings) {
    // Istio's applyLocalityLoadBalancer rewrites the load assignment's priorities and
    // weights for the proxy's locality; Isthmus sends every locality at priority 0.
    if lb
        .locality_lb_setting
        .as_ref()
        .is_some_and(|l| l.enabled != Some(false))
    {
        n.add(
            format!("{p}.localityLbSetting"),
            "loadBalancer.localityLbSetting",
            "Istio weights traffic by locality (distribute) and fails over by region or label (failover, failoverPriority); Isthmus sends every locality's endpoints at the same priority",
        );
    }
    if lb
        .zone_aware_lb_setting
        .as_ref()
        .is_some_and(|z| z.enabled != Some(false))
    {
        n.add(
            format!("{p}.zoneAwareLbSetting"),
            "loadBalancer.zoneAwareLbSetting",
            "Istio turns on Envoy's zone-aware routing (traffic kept in the caller's zone while it has enough endpoints); Isthmus spreads traffic across zones",
        );
    }
    if lb.backend_utilization.is_some() {
        n.add(
            format!("{p}.backendUtilization"),
            "loadBalancer.backendUtilization",
            "Istio weights endpoints by the utilization they report (client-side weighted round robin); Isthmus uses LEAST_REQUEST",
        );
    }
}

fn client_tls(n: &mut Notes, p: &str, tls: &ClientTlsSettings) {
    let mode = tls.mode.unwrap_or_default();
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
        && tls
            .credential_name
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    {
        n.add(
            format!("{p}.credentialName"),
            "tls.credentialName",
            "Istio takes the client certificate, key and CA from this Secret; Isthmus does not serve Secrets to proxies yet: it verifies the server against the system CA bundle and sends no client certificate",
        );
    }
}

// ---------------------------------------------------------------------------
// Gateway

fn gateway(n: &mut Notes, gw: &Gateway) {
    // Istio's PushContext.mergeGateways: a Gateway without a selector applies to every
    // gateway proxy.
    if gw.selector.is_empty() {
        n.add(
            "spec.selector",
            "selector (none)",
            "Istio applies a Gateway without a selector to every gateway proxy; Isthmus applies it to none (add a selector with the gateway pods' labels, e.g. istio: ingressgateway)",
        );
    }
    for (i, s) in gw.servers.iter().enumerate() {
        let sp = format!("spec.servers[{i}]");
        if s.bind.as_deref().is_some_and(|b| !b.is_empty()) {
            n.add(
                format!("{sp}.bind"),
                "servers.bind",
                "Istio binds the server's listener to this address or unix socket; Isthmus listens on 0.0.0.0",
            );
        }
        if let Some(tls) = &s.tls {
            server_tls(n, &format!("{sp}.tls"), s, tls);
        }
    }
}

fn server_tls_mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

fn server_tls(n: &mut Notes, tp: &str, server: &Server, t: &ServerTlsSettings) {
    let mode = t.mode.unwrap_or_default();
    let name = server_tls_mode_name(mode);
    let mode_field = format!("{tp}.mode");
    match mode {
        ServerTlsMode::IstioMutual => n.add(
            mode_field,
            "servers.tls.mode ISTIO_MUTUAL",
            "Istio terminates mutual TLS with the mesh's own certificates; Isthmus does not terminate it: connections are routed by SNI to the bound VirtualServices' tls rules, as with PASSTHROUGH",
        ),
        ServerTlsMode::AutoPassthrough => n.add(
            mode_field,
            "servers.tls.mode AUTO_PASSTHROUGH",
            "Istio routes each connection by its SNI (outbound_.PORT_.SUBSET_.HOST) straight to that service, without VirtualServices; Isthmus routes only SNI names that bound VirtualServices' tls rules list, as with PASSTHROUGH",
        ),
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
            if Protocol::parse(&server.port.protocol) == Some(Protocol::Tls) =>
        {
            n.add(
                mode_field,
                &format!("servers.tls.mode {name} (protocol TLS)"),
                "Istio terminates TLS on a TLS server and forwards the stream by the bound VirtualServices' tcp rules; Isthmus does not terminate it: connections are routed by SNI to tls rules, as with PASSTHROUGH",
            )
        }
        _ => {}
    }
    if !matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) {
        // Without termination the remaining settings mean nothing, in Istio too.
        return;
    }
    if t.credential_names.len() > 1 {
        n.add(
            format!("{tp}.credentialNames[1]"),
            "servers.tls.credentialNames (second)",
            "Istio serves both certificates (e.g. RSA and ECDSA) and picks one per client; Isthmus serves only the first",
        );
    }
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if !t.tls_certificates.is_empty() {
        n.add(
            format!("{tp}.tlsCertificates"),
            "servers.tls.tlsCertificates",
            "Istio serves these certificate files; Isthmus reads only credentialName(s) or serverCertificate and privateKey, and skips a server that has neither",
        );
    }
    if has(&t.ca_cert_credential_name) {
        n.add(
            format!("{tp}.caCertCredentialName"),
            "servers.tls.caCertCredentialName",
            "Istio verifies client certificates against the CA in this Secret; Isthmus does not read it: the CA comes from credentialName's Secret (ca.crt) or caCertificates",
        );
    }
    if has(&t.ca_crl) {
        n.add(
            format!("{tp}.caCrl"),
            "servers.tls.caCrl",
            "Istio rejects client certificates this list revokes; Isthmus does not check revocation",
        );
    }
    if !t.subject_alt_names.is_empty() {
        n.add(
            format!("{tp}.subjectAltNames"),
            "servers.tls.subjectAltNames",
            "Istio accepts only client certificates with one of these names; Isthmus accepts any client certificate its CA signed",
        );
    }
    for (field, list) in [
        ("verifyCertificateSpki", &t.verify_certificate_spki),
        ("verifyCertificateHash", &t.verify_certificate_hash),
    ] {
        if !list.is_empty() {
            n.add(
                format!("{tp}.{field}"),
                &format!("servers.tls.{field}"),
                "Istio accepts only client certificates with these fingerprints; Isthmus does not pin client certificates",
            );
        }
    }
    for (field, version) in [
        ("minProtocolVersion", t.min_protocol_version),
        ("maxProtocolVersion", t.max_protocol_version),
    ] {
        if version.is_some_and(|v| v != TlsProtocolVersion::TlsAuto) {
            n.add(
                format!("{tp}.{field}"),
                &format!("servers.tls.{field}"),
                "Istio limits the TLS versions the server accepts; Isthmus uses Envoy's defaults (TLS 1.2 to 1.3)",
            );
        }
    }
    if !t.cipher_suites.is_empty() {
        n.add(
            format!("{tp}.cipherSuites"),
            "servers.tls.cipherSuites",
            "Istio offers only these cipher suites; Isthmus offers Envoy's default list",
        );
    }
    if !t.ecdh_curves.is_empty() {
        n.add(
            format!("{tp}.ecdhCurves"),
            "servers.tls.ecdhCurves",
            "Istio offers only these ECDH curves; Isthmus offers Envoy's default curves",
        );
    }
    if t.insecure_skip_verify == Some(true) {
        n.add(
            format!("{tp}.insecureSkipVerify"),
            "servers.tls.insecureSkipVerify",
            "Istio lets clients whose certificate fails verification through; Isthmus rejects them",
        );
    }
}

// ---------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry

/// The protocol of a ServiceEntry port: its `protocol`, else its name's prefix.
fn port_protocol(p: &ServicePort) -> Protocol {
    p.protocol
        .as_deref()
        .and_then(Protocol::parse)
        .unwrap_or_else(|| Protocol::select(Some(&p.name), None, None))
}

/// Whether sidecars serve the port with a listener per service address (TCP proxying):
/// what is neither HTTP (routed by Host), TLS (routed by SNI) nor UDP.
fn needs_address(p: Protocol) -> bool {
    !p.is_http() && !matches!(p, Protocol::Https | Protocol::Tls | Protocol::Udp)
}

fn service_entry(n: &mut Notes, se: &ServiceEntry) {
    if se.location == Some(Location::MeshInternal) {
        n.add(
            "spec.location",
            "location MESH_INTERNAL",
            "Istio treats the endpoints as mesh workloads (mutual TLS to those with sidecars); Isthmus has no mesh mTLS yet and sends plaintext, as for MESH_EXTERNAL",
        );
    }
    if !se.subject_alt_names.is_empty() {
        n.add(
            "spec.subjectAltNames",
            "subjectAltNames",
            "Istio verifies the endpoints' certificates against these names under mutual TLS; Isthmus has no mesh mTLS yet and does not use them",
        );
    }
    if se.resolution == Some(Resolution::DynamicDns) {
        n.add(
            "spec.resolution",
            "resolution DYNAMIC_DNS",
            "Istio resolves each request's host on the proxy (dynamic forward proxy); Isthmus gives the service no endpoints, so requests to it fail with 503",
        );
    }
    // Istio's buildSidecarOutboundListeners: a TCP port of a service without an address
    // gets a wildcard listener (0.0.0.0_PORT), one with a CIDR a listener matching it.
    let tcp_ports: Vec<(usize, &ServicePort)> = se
        .ports
        .iter()
        .enumerate()
        .filter(|(_, p)| needs_address(port_protocol(p)))
        .collect();
    if se.addresses.is_empty() {
        for (i, p) in &tcp_ports {
            n.add(
                format!("spec.ports[{i}]"),
                "ports (TCP, without addresses)",
                &format!(
                    "Istio sends every outbound TCP connection on port {} through this ServiceEntry (listener 0.0.0.0_{}); Isthmus builds no listener for a TCP port without an address: connections are {UNKNOWN_DESTINATION}",
                    p.number, p.number
                ),
            );
        }
    } else if !tcp_ports.is_empty() {
        for (i, a) in se.addresses.iter().enumerate() {
            if a.contains('/') {
                n.add(
                    format!("spec.addresses[{i}]"),
                    "addresses (CIDR, TCP ports)",
                    &format!(
                        "Istio sends outbound TCP connections to {a} on the ServiceEntry's TCP ports through it; Isthmus builds listeners only for single addresses: connections are {UNKNOWN_DESTINATION}"
                    ),
                );
            }
        }
    }
    for (i, e) in se.endpoints.iter().flatten().enumerate() {
        workload_entry(n, &format!("spec.endpoints[{i}]"), e);
    }
}

/// A WorkloadEntry, or one endpoint of a ServiceEntry (`p` is its path).
fn workload_entry(n: &mut Notes, p: &str, we: &WorkloadEntry) {
    let address = we.address.as_deref().unwrap_or_default();
    if address.is_empty() {
        n.add(
            format!("{p}.address"),
            "address (none, network only)",
            "Istio reaches the workload through its network's east-west gateway; Isthmus has no address to send proxies, so the workload is unreachable",
        );
    } else if address.starts_with("unix://") {
        n.add(
            format!("{p}.address"),
            "address (unix://)",
            "Istio connects to this unix domain socket; Isthmus cannot send socket endpoints to proxies yet, so the workload is unreachable",
        );
    }
    if we.network.as_deref().is_some_and(|s| !s.is_empty()) {
        n.add(
            format!("{p}.network"),
            "network",
            "Istio reaches the workload from proxies on other networks through its network's east-west gateway; Isthmus sends every proxy the workload's own address (no routing across networks yet)",
        );
    }
}

// ---------------------------------------------------------------------------
// Sidecar: a whole kind

fn sidecar(n: &mut Notes, s: &Sidecar) {
    let parts: Vec<&str> = [
        ("egress", !s.egress.is_empty()),
        ("ingress", !s.ingress.is_empty()),
        ("outboundTrafficPolicy", s.outbound_traffic_policy.is_some()),
        ("inboundConnectionPool", s.inbound_connection_pool.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let whom = if s.workload_selector.is_some() {
        "the selected workloads"
    } else {
        "every workload in its namespace"
    };
    n.add(
        "spec",
        "(whole kind)",
        &format!(
            "Istio applies the Sidecar's {} to the proxies of {whom}; Isthmus does not read Sidecars: every proxy sees every service exported to it, listens on the ports its services declare and follows the mesh's outboundTrafficPolicy",
            english_list(&parts)
        ),
    );
}

/// `a`, `a and b`, `a, b and c`.
fn english_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::parse_documents;

    /// The entries of the one object in `yaml` (a document without apiVersion and
    /// metadata lines: they are added), as (field, message).
    fn notes(kind: &str, spec: &str) -> Vec<(String, String)> {
        let group = if kind == "PeerAuthentication" {
            "security.istio.io"
        } else {
            "networking.istio.io"
        };
        let mut text =
            format!("apiVersion: {group}/v1\nkind: {kind}\nmetadata:\n  name: x\nspec:\n");
        for line in spec.lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        let docs = parse_documents(Path::new("t.yaml"), &text, "default", "cluster.local");
        let object = docs[0]
            .object
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", docs[0].diagnostics));
        not_enforced(object)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn fields(kind: &str, spec: &str) -> Vec<String> {
        notes(kind, spec).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn enforced_fields_are_not_listed() {
        let dr = "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    simple: ROUND_ROBIN\n    localityLbSetting: {enabled: false}\n  tls: {mode: SIMPLE, sni: reviews.example.com}\n  outlierDetection: {consecutive5xxErrors: 3}\nsubsets:\n- name: v1\n  labels: {version: v1}\n";
        assert_eq!(fields("DestinationRule", dr), Vec::<String>::new());
        let gw = "selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialName: cert, minProtocolVersion: TLS_AUTO}\n";
        assert_eq!(fields("Gateway", gw), Vec::<String>::new());
        let se = "hosts: [db.example.com]\naddresses: [203.0.113.5]\nports:\n- {number: 5432, name: tcp, protocol: TCP}\nresolution: DNS\n";
        assert_eq!(fields("ServiceEntry", se), Vec::<String>::new());
    }

    #[test]
    fn traffic_policy_fields_at_every_level() {
        let dr = "host: reviews\ntrafficPolicy:\n  tunnel: {targetHost: proxy.example.com, targetPort: 3128}\n  portLevelSettings:\n  - port: {number: 9080}\n    tls: {mode: ISTIO_MUTUAL}\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n    proxyProtocol: {version: V2}\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-west/zone1/*\n          to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 20}\n";
        assert_eq!(
            fields("DestinationRule", dr),
            [
                "spec.trafficPolicy.tunnel",
                "spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting",
                "spec.subsets[0].trafficPolicy.proxyProtocol",
            ]
        );
    }

    #[test]
    fn messages_name_the_kind_and_the_field() {
        let n = notes(
            "DestinationRule",
            "host: reviews\ntrafficPolicy:\n  tunnel: {targetHost: proxy.example.com, targetPort: 3128}\n",
        );
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].0, "spec.trafficPolicy.tunnel");
        assert!(
            n[0].1.starts_with(
                "accepted, not enforced yet: DestinationRule trafficPolicy.tunnel: Istio "
            ),
            "{n:?}"
        );
    }

    #[test]
    fn istio_mutual_is_enforced() {
        let dr = "host: reviews\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n";
        assert_eq!(fields("DestinationRule", dr), Vec::<String>::new());
    }

    #[test]
    fn credential_name_only_where_tls_is_originated() {
        let tls = |mode: &str| {
            fields(
                "DestinationRule",
                &format!(
                    "host: api.example.com\ntrafficPolicy:\n  tls: {{mode: {mode}, credentialName: client}}\n"
                ),
            )
        };
        assert_eq!(tls("SIMPLE"), ["spec.trafficPolicy.tls.credentialName"]);
        assert_eq!(tls("MUTUAL"), ["spec.trafficPolicy.tls.credentialName"]);
        assert_eq!(tls("DISABLE"), Vec::<String>::new());
    }

    #[test]
    fn gateway_server_tls_settings_only_when_terminating() {
        let gw = |protocol: &str, tls: &str| {
            fields(
                "Gateway",
                &format!(
                    "selector: {{istio: ingressgateway}}\nservers:\n- port: {{number: 443, name: p, protocol: {protocol}}}\n  hosts: [\"*\"]\n  tls: {tls}\n"
                ),
            )
        };
        assert_eq!(
            gw(
                "HTTPS",
                "{mode: MUTUAL, credentialName: c, minProtocolVersion: TLSV1_3, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256], subjectAltNames: [client.example.com]}"
            ),
            [
                "spec.servers[0].tls.subjectAltNames",
                "spec.servers[0].tls.minProtocolVersion",
                "spec.servers[0].tls.cipherSuites",
            ]
        );
        assert_eq!(
            gw("TLS", "{mode: SIMPLE, credentialName: c}"),
            ["spec.servers[0].tls.mode"]
        );
        assert_eq!(
            gw("TLS", "{mode: AUTO_PASSTHROUGH}"),
            ["spec.servers[0].tls.mode"]
        );
        assert_eq!(gw("TLS", "{mode: PASSTHROUGH}"), Vec::<String>::new());
    }

    #[test]
    fn service_entry_tcp_ports_need_a_single_address() {
        let se = |addresses: &str| {
            fields(
                "ServiceEntry",
                &format!(
                    "hosts: [db.example.com]\n{addresses}ports:\n- {{number: 80, name: http, protocol: HTTP}}\n- {{number: 5432, name: tcp-pg}}\nresolution: NONE\n"
                ),
            )
        };
        assert_eq!(se(""), ["spec.ports[1]"]);
        assert_eq!(se("addresses: [203.0.113.0/24]\n"), ["spec.addresses[0]"]);
        assert_eq!(se("addresses: [203.0.113.7]\n"), Vec::<String>::new());
    }

    #[test]
    fn whole_kinds_name_what_they_set() {
        let n = notes(
            "Sidecar",
            "egress:\n- hosts: [\"./*\"]\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].0, "spec");
        assert!(
            n[0].1.starts_with("accepted, not enforced yet: Sidecar (whole kind): Istio applies the Sidecar's egress and outboundTrafficPolicy to the proxies of every workload in its namespace;"),
            "{}",
            n[0].1
        );
        // PeerAuthentication is enforced: no note.
        let n = notes(
            "PeerAuthentication",
            "selector:\n  matchLabels: {app: reviews}\nmtls: {mode: STRICT}\nportLevelMtls:\n  9080: {mode: PERMISSIVE}\n",
        );
        assert!(n.is_empty(), "{n:?}");
    }

    #[test]
    fn english_lists() {
        assert_eq!(english_list(&["a"]), "a");
        assert_eq!(english_list(&["a", "b"]), "a and b");
        assert_eq!(english_list(&["a", "b", "c"]), "a, b and c");
    }
}
