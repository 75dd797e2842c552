//! `Sidecar`: what a workload's proxy listens on and which services it can reach.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::{Destination, Port, WorkloadSelector};
use super::destination_rule::{ConnectionPoolSettings, check_connection_pool};
use super::gateway::{ServerTlsMode, ServerTlsSettings, check_namespaced_host, check_server_tls};
use super::validate::{
    Proto, check_port, check_port_name, check_protocol, check_workload_selector, error, is_ip,
    validate_fqdn, warning,
};
use super::virtual_service::check_destination;
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a Sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// The workloads this applies to; none means every workload in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioIngressListener {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>` or `unix://<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener and the hosts reachable through it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// None for the catch-all listener (the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/dnsName` entries (`*/`, `./`, `~/` namespaces allowed). Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// How traffic reaches a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    #[default]
    Default,
    Iptables,
    None,
}

/// What happens to traffic for hosts outside the mesh registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// Only with `ALLOW_ANY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// Outbound traffic policy modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    RegistryOnly,
    #[default]
    AllowAny,
}

// ---------------------------------------------------------------------------
// Validation

const UNIX: &str = "unix://";

impl ValidateSpec for Sidecar {
    fn validate(&self, ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        if let Some(ws) = &self.workload_selector {
            if ws.labels.is_empty() {
                error(
                    out,
                    "spec.workloadSelector.labels",
                    "workloadSelector has no labels; add labels, or remove workloadSelector to apply to the whole namespace",
                );
            }
            check_workload_selector(out, "spec.workloadSelector", ws);
        }
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            error(
                out,
                "spec",
                "the Sidecar is empty; set egress, ingress, outboundTrafficPolicy or inboundConnectionPool",
            );
            return;
        }

        let mut ingress_ports: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, l) in self.ingress.iter().enumerate() {
            check_ingress(out, &format!("spec.ingress[{i}]"), l, i, &mut ingress_ports);
        }

        let mut egress_ports: BTreeMap<u32, usize> = BTreeMap::new();
        let mut sockets: BTreeMap<&str, usize> = BTreeMap::new();
        let mut catch_all: Option<usize> = None;
        for (i, l) in self.egress.iter().enumerate() {
            let ep = format!("spec.egress[{i}]");
            match &l.port {
                None => {
                    if let Some(j) = catch_all {
                        error(
                            out,
                            &ep,
                            format!(
                                "egress[{j}] already has no port; only one egress listener can omit the port"
                            ),
                        );
                    } else if i + 1 != self.egress.len() {
                        error(
                            out,
                            &ep,
                            "the egress listener without a port must be the last one; move it to the end",
                        );
                    }
                    catch_all.get_or_insert(i);
                }
                Some(p) => {
                    check_egress_port(out, &ep, l, p);
                    let bind = l.bind.as_deref().unwrap_or_default();
                    if p.number == 0 {
                        if let Some(j) = sockets.insert(bind, i) {
                            error(
                                out,
                                format!("{ep}.bind"),
                                format!(
                                    "unix socket {bind:?} is already used by egress[{j}]; each listener needs its own socket"
                                ),
                            );
                        }
                    } else if let Some(j) = egress_ports.insert(p.number, i) {
                        error(
                            out,
                            format!("{ep}.port.number"),
                            format!(
                                "port {} is already used by egress[{j}]; egress ports must be unique",
                                p.number
                            ),
                        );
                    }
                }
            }
            check_egress_hosts(out, &ep, &l.hosts, ctx.namespace);
        }

        if let Some(tp) = &self.outbound_traffic_policy {
            check_outbound_policy(out, "spec.outboundTrafficPolicy", tp);
        }
        if let Some(c) = &self.inbound_connection_pool {
            check_connection_pool(out, "spec.inboundConnectionPool", c);
        }
    }
}

fn check_ingress(
    out: &mut Vec<FieldIssue>,
    ip: &str,
    l: &IstioIngressListener,
    i: usize,
    ports: &mut BTreeMap<u32, usize>,
) {
    let Some(p) = &l.port else {
        error(
            out,
            format!("{ip}.port"),
            "port is required for ingress listeners: the port the workload receives traffic on",
        );
        return;
    };
    if p.target_port.is_some_and(|t| t > 0) {
        warning(
            out,
            format!("{ip}.port.targetPort"),
            "targetPort has no effect on Sidecars; remove it",
        );
    }
    if !p.name.is_empty() {
        check_port_name(out, format!("{ip}.port.name"), &p.name);
    }
    check_protocol(out, format!("{ip}.port.protocol"), &p.protocol);
    check_port(out, format!("{ip}.port.number"), p.number);
    if let Some(bind) = l.bind.as_deref().filter(|b| !b.is_empty())
        && !is_ip(bind)
    {
        error(
            out,
            format!("{ip}.bind"),
            format!("bind {bind:?} is not an IP address"),
        );
    }
    if let Some(j) = ports.insert(p.number, i) {
        error(
            out,
            format!("{ip}.port.number"),
            format!(
                "port {} is already used by ingress[{j}]; ingress ports must be unique",
                p.number
            ),
        );
    }
    if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
        check_default_endpoint(out, &format!("{ip}.defaultEndpoint"), ep);
    }
    if let Some(t) = &l.tls {
        let tp = format!("{ip}.tls");
        if !t.subject_alt_names.is_empty() {
            warning(
                out,
                format!("{tp}.subjectAltNames"),
                "subjectAltNames is not supported in Sidecar ingress TLS and is ignored",
            );
        }
        if t.https_redirect == Some(true) {
            error(
                out,
                format!("{tp}.httpsRedirect"),
                "httpsRedirect is not supported on Sidecars; remove it",
            );
        }
        if t.credential_name.is_some() {
            error(
                out,
                format!("{tp}.credentialName"),
                "credentialName is not supported on Sidecars; use serverCertificate and privateKey",
            );
        }
        if let Some(m @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) = t.mode {
            let name = if m == ServerTlsMode::IstioMutual {
                "ISTIO_MUTUAL"
            } else {
                "AUTO_PASSTHROUGH"
            };
            error(
                out,
                format!("{tp}.mode"),
                format!("mode {name} is not allowed in Sidecar ingress TLS; use SIMPLE or MUTUAL"),
            );
        }
        if !Proto::parse(&p.protocol).is_some_and(Proto::is_tls) {
            error(
                out,
                &tp,
                "TLS settings need an HTTPS or TLS port; set port.protocol to HTTPS or TLS, or remove tls",
            );
        }
        check_server_tls(out, &tp, t);
    }
    if let Some(c) = &l.connection_pool {
        check_connection_pool(out, &format!("{ip}.connectionPool"), c);
    }
}

/// Istio's defaultEndpoint rule: `127.0.0.1:<port>`, `0.0.0.0:<port>`, `:<port>`,
/// `[::1]:<port>`, `[::]:<port>` or `unix://<path>`.
fn check_default_endpoint(out: &mut Vec<FieldIssue>, f: &str, ep: &str) {
    if ep.starts_with(UNIX) {
        return;
    }
    let hint = "defaultEndpoint must be 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://<path>";
    let Some((host, port)) = ep.rsplit_once(':') else {
        error(out, f, format!("{ep:?} is not valid; {hint}"));
        return;
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]") {
        error(out, f, format!("{ep:?} is not valid; {hint}"));
    }
    match port.parse::<u32>() {
        Ok(n) => check_port(out, f, n),
        Err(_) => error(
            out,
            f,
            format!("the port {port:?} in defaultEndpoint is not a number; {hint}"),
        ),
    }
}

/// Istio's `validateSidecarEgressPortBindAndCaptureMode`.
fn check_egress_port(out: &mut Vec<FieldIssue>, ep: &str, l: &IstioEgressListener, p: &Port) {
    if p.target_port.is_some_and(|t| t > 0) {
        warning(
            out,
            format!("{ep}.port.targetPort"),
            "targetPort has no effect on Sidecars; remove it",
        );
    }
    if !p.name.is_empty() {
        check_port_name(out, format!("{ep}.port.name"), &p.name);
    }
    check_protocol(out, format!("{ep}.port.protocol"), &p.protocol);
    let bind = l.bind.as_deref().unwrap_or_default();
    if p.number == 0 {
        match bind.strip_prefix(UNIX) {
            None => error(
                out,
                format!("{ep}.port.number"),
                "port 0 is only for unix domain socket listeners; set a port number, or bind to unix://<path>",
            ),
            Some(path) => {
                if path.is_empty() || !(path.starts_with('/') || path.starts_with('@')) {
                    error(
                        out,
                        format!("{ep}.bind"),
                        format!(
                            "unix socket {bind:?} must be an absolute path (unix:///path) or an abstract socket (unix://@name)"
                        ),
                    );
                }
            }
        }
        if matches!(l.capture_mode, Some(CaptureMode::Iptables)) {
            error(
                out,
                format!("{ep}.captureMode"),
                "unix domain socket listeners need captureMode DEFAULT or NONE",
            );
        }
    } else {
        check_port(out, format!("{ep}.port.number"), p.number);
        if !bind.is_empty() && !is_ip(bind) {
            error(
                out,
                format!("{ep}.bind"),
                format!("bind {bind:?} is not an IP address"),
            );
        }
    }
}

/// Egress hosts: required, `namespace/dnsName` each; overlaps are warned about.
fn check_egress_hosts(out: &mut Vec<FieldIssue>, ep: &str, hosts: &[String], namespace: &str) {
    if hosts.is_empty() {
        error(
            out,
            format!("{ep}.hosts"),
            "an egress listener needs at least one host, e.g. \"./*\" or \"istio-system/*\"",
        );
        return;
    }
    let mut by_ns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (h, host) in hosts.iter().enumerate() {
        let f = format!("{ep}.hosts[{h}]");
        if let Some((ns, svc)) = host.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let svcs = by_ns.entry(ns).or_default();
            let duplicate = if svc == "*" {
                !svcs.is_empty()
            } else {
                svcs.contains(svc) || svcs.contains("*")
            };
            if duplicate {
                warning(
                    out,
                    &f,
                    format!(
                        "host {host:?} repeats or overlaps an earlier host of this listener; remove it"
                    ),
                );
            }
            svcs.insert(svc);
        }
        check_namespaced_host(out, &f, host, false);
    }
    if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() > 1 {
        warning(
            out,
            format!("{ep}.hosts"),
            "\"*/*\" already selects every host; the other hosts add nothing",
        );
    }
}

/// Istio's `validateSidecarOutboundTrafficPolicy`.
fn check_outbound_policy(out: &mut Vec<FieldIssue>, p: &str, tp: &OutboundTrafficPolicy) {
    let Some(proxy) = &tp.egress_proxy else {
        return;
    };
    let pp = format!("{p}.egressProxy");
    if tp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
        error(
            out,
            &pp,
            "egressProxy can only be set with mode ALLOW_ANY; set mode: ALLOW_ANY or remove egressProxy",
        );
        return;
    }
    if !proxy.host.is_empty()
        && let Err(e) = validate_fqdn(&proxy.host)
    {
        error(out, format!("{pp}.host"), e);
        return;
    }
    if proxy.port.is_none() {
        error(
            out,
            format!("{pp}.port"),
            "egressProxy needs a port: the port of the egress proxy service",
        );
    }
    check_destination(out, &pp, proxy);
}

#[cfg(test)]
mod tests {
    use crate::Level::{Error, Warning};
    use crate::istio::testing::{assert_issue, check};

    const KIND: &str = "Sidecar";

    #[test]
    fn a_typical_sidecar_is_clean() {
        let d = check(
            KIND,
            "workloadSelector:\n  labels: {app: ratings}\ningress:\n- port: {number: 9080, protocol: HTTP, name: somename}\n  defaultEndpoint: 127.0.0.1:8080\n  captureMode: IPTABLES\negress:\n- port: {number: 9080, protocol: HTTP, name: egresshttp}\n  hosts: [\"prod-us1/*\"]\n- hosts: [\"istio-system/*\", \"./*\", \"~/*\"]\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn empty_sidecar_and_selector() {
        let d = check(KIND, "workloadSelector: {labels: {}}\n");
        assert_issue(&d, Error, "spec.workloadSelector.labels", "no labels");
        assert_issue(&d, Error, "spec", "the Sidecar is empty");
        let d = check(
            KIND,
            "workloadSelector: {labels: {app: \"rev*\"}}\negress:\n- hosts: [\"./*\"]\n",
        );
        assert_issue(&d, Error, "spec.workloadSelector.labels.app", "wildcards");
    }

    #[test]
    fn egress_hosts() {
        let d = check(
            KIND,
            "egress:\n- hosts: [reviews, \"bad_ns/*\", \"./reviews\", \"ns/*\", \"ns/a.b.com\"]\n- port: {number: 80, protocol: HTTP}\n  hosts: []\n",
        );
        assert_issue(&d, Error, "spec.egress[0].hosts[0]", "<namespace>/<host>");
        assert_issue(&d, Error, "spec.egress[0].hosts[1]", "namespace \"bad_ns\"");
        assert_issue(&d, Error, "spec.egress[0].hosts[2]", "short host name");
        assert_issue(
            &d,
            Warning,
            "spec.egress[0].hosts[4]",
            "overlaps an earlier host",
        );
        assert_issue(&d, Error, "spec.egress[1].hosts", "at least one host");
        assert_issue(&d, Error, "spec.egress[0]", "must be the last one");
    }

    #[test]
    fn egress_ports() {
        let d = check(
            KIND,
            "egress:\n- port: {number: 80, protocol: HTTPX, name: \"bad name\"}\n  hosts: [\"./*\"]\n- port: {number: 80, protocol: HTTP}\n  bind: nope\n  hosts: [\"./*\"]\n- port: {number: 0, protocol: HTTP}\n  hosts: [\"./*\"]\n- hosts: [\"./*\"]\n",
        );
        assert_issue(&d, Error, "spec.egress[0].port.protocol", "\"HTTPX\"");
        assert_issue(&d, Error, "spec.egress[0].port.name", "\"bad name\"");
        assert_issue(
            &d,
            Error,
            "spec.egress[1].port.number",
            "already used by egress[0]",
        );
        assert_issue(&d, Error, "spec.egress[1].bind", "not an IP");
        assert_issue(
            &d,
            Error,
            "spec.egress[2].port.number",
            "unix domain socket",
        );
    }

    #[test]
    fn ingress_listeners() {
        let d = check(
            KIND,
            "ingress:\n- defaultEndpoint: 127.0.0.1:8080\n- port: {number: 9080, protocol: HTTP}\n  defaultEndpoint: 10.0.0.1:8080\n- port: {number: 9080, protocol: HTTP}\n  defaultEndpoint: \"127.0.0.1:http\"\n- port: {number: 9443, protocol: HTTP}\n  tls: {mode: ISTIO_MUTUAL, httpsRedirect: true}\n",
        );
        assert_issue(&d, Error, "spec.ingress[0].port", "port is required");
        assert_issue(
            &d,
            Error,
            "spec.ingress[1].defaultEndpoint",
            "\"10.0.0.1:8080\" is not valid",
        );
        assert_issue(
            &d,
            Error,
            "spec.ingress[2].port.number",
            "already used by ingress[1]",
        );
        assert_issue(&d, Error, "spec.ingress[2].defaultEndpoint", "not a number");
        assert_issue(
            &d,
            Error,
            "spec.ingress[3].tls.mode",
            "ISTIO_MUTUAL is not allowed",
        );
        assert_issue(
            &d,
            Error,
            "spec.ingress[3].tls.httpsRedirect",
            "not supported",
        );
        assert_issue(&d, Error, "spec.ingress[3].tls", "HTTPS or TLS port");
    }

    #[test]
    fn outbound_traffic_policy() {
        let d = check(
            KIND,
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n  egressProxy: {host: proxy.example.com, port: {number: 3128}}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.outboundTrafficPolicy.egressProxy",
            "ALLOW_ANY",
        );
        let d = check(
            KIND,
            "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: proxy.example.com}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.outboundTrafficPolicy.egressProxy.port",
            "needs a port",
        );
        let d = check(KIND, "outboundTrafficPolicy: {mode: DENY_ALL}\n");
        assert_issue(
            &d,
            Error,
            "spec.outboundTrafficPolicy.mode",
            "unknown variant `DENY_ALL`",
        );
    }

    #[test]
    fn inbound_connection_pool() {
        let d = check(
            KIND,
            "inboundConnectionPool:\n  http: {http1MaxPendingRequests: -5, idleTimeout: soon}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.inboundConnectionPool.http.http1MaxPendingRequests",
            "negative",
        );
        assert_issue(
            &d,
            Error,
            "spec.inboundConnectionPool.http.idleTimeout",
            "not a valid duration",
        );
    }
}
