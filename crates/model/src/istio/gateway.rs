//! `Gateway`: the ports, protocols, hosts and TLS settings of a load balancer at the
//! edge of the mesh (an ingress, egress or east-west gateway).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::Port;
use super::validate::{
    PROTOCOLS, Proto, check_port, error, is_dns1123_label, is_ip, set_names,
    validate_wildcard_domain, warning,
};
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods this configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listener of the gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Required.
    #[serde(default)]
    pub port: Port,
    /// An IP or `unix://` socket to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts exposed, as `[namespace/]dnsName`. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Optional, unique among the Gateway's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// TLS a server terminates or passes through (also Sidecar ingress TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// On an HTTP server: redirect every request to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// A Kubernetes secret holding the certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// One or two secrets (e.g. RSA and ECDSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// One or two inline certificate/key pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocolVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocolVersion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// An inline server certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// Server TLS modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsProtocolVersion {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV10,
    #[serde(rename = "TLSV1_1")]
    TlsV11,
    #[serde(rename = "TLSV1_2")]
    TlsV12,
    #[serde(rename = "TLSV1_3")]
    TlsV13,
}

// ---------------------------------------------------------------------------
// Validation

/// BoringSSL cipher suites Envoy accepts (Istio's `security.IsValidCipherSuite`).
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(s: &str) -> bool {
    // `[A|B]` is an equal-preference group.
    match s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        Some(group) => group.split('|').all(|c| CIPHER_SUITES.contains(&c)),
        None => CIPHER_SUITES.contains(&s),
    }
}

/// Which protocols can share one port: plaintext HTTP ones with each other, HTTPS
/// and TLS with each other (by SNI), any other only with itself.
fn port_class(p: Proto) -> &'static str {
    if p.is_http() {
        "HTTP"
    } else if p.is_tls() {
        "HTTPS/TLS"
    } else {
        match p {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Mongo => "MONGO",
            Proto::Redis => "REDIS",
            _ => "MYSQL",
        }
    }
}

impl ValidateSpec for Gateway {
    fn validate(&self, _ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        if self.servers.is_empty() {
            error(
                out,
                "spec.servers",
                "a Gateway needs at least one server; add a server with a port and hosts",
            );
        }
        let mut port_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut server_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut port_classes: BTreeMap<u32, (usize, &str, &'static str)> = BTreeMap::new();
        for (i, s) in self.servers.iter().enumerate() {
            let sp = format!("spec.servers[{i}]");
            check_server(out, &sp, s);

            // Istio requires port names to be unique across servers.
            if !s.port.name.is_empty()
                && let Some(j) = port_names.insert(&s.port.name, i)
            {
                error(
                    out,
                    format!("{sp}.port.name"),
                    format!(
                        "port name {:?} is already used by servers[{j}]; port names must be unique across servers",
                        s.port.name
                    ),
                );
            }
            if let Some(name) = s.name.as_deref().filter(|n| !n.is_empty())
                && let Some(j) = server_names.insert(name, i)
            {
                error(
                    out,
                    format!("{sp}.name"),
                    format!(
                        "server name {name:?} is already used by servers[{j}]; server names must be unique"
                    ),
                );
            }
            let proto = Proto::parse(&s.port.protocol);
            if let Some(t) = &s.tls
                && t.https_redirect == Some(true)
                && proto.is_some_and(|p| !p.is_http())
            {
                warning(
                    out,
                    format!("{sp}.tls.httpsRedirect"),
                    "httpsRedirect only has an effect on HTTP servers; remove it",
                );
            }
            if let Some(p) = proto
                && s.port.number != 0
            {
                let class = port_class(p);
                match port_classes.get(&s.port.number) {
                    Some((j, other, other_class)) if *other_class != class => error(
                        out,
                        format!("{sp}.port.protocol"),
                        format!(
                            "port {} is also used by servers[{j}] with protocol {other}; servers sharing a port need compatible protocols (HTTP ones together, or HTTPS and TLS) — use another port",
                            s.port.number
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        port_classes.insert(s.port.number, (i, &s.port.protocol, class));
                    }
                }
            }
        }
    }
}

/// Istio's `validateServer`.
fn check_server(out: &mut Vec<FieldIssue>, sp: &str, s: &Server) {
    if s.hosts.is_empty() {
        error(
            out,
            format!("{sp}.hosts"),
            "a server needs at least one host, e.g. \"*\" or \"example.com\"",
        );
    }
    for (h, host) in s.hosts.iter().enumerate() {
        check_namespaced_host(out, &format!("{sp}.hosts[{h}]"), host, true);
    }
    let bind = s.bind.as_deref().unwrap_or_default();
    let unix = bind.starts_with("unix://");
    let port_ok = check_server_port(out, &format!("{sp}.port"), &s.port, unix);
    if unix {
        if s.port.number != 0 {
            error(
                out,
                format!("{sp}.port.number"),
                format!("a server bound to a unix socket ({bind:?}) must have port number 0"),
            );
        }
    } else if !bind.is_empty() && !is_ip(bind) {
        error(
            out,
            format!("{sp}.bind"),
            format!("bind {bind:?} is not an IP address or a unix:// socket"),
        );
    }
    if let Some(t) = &s.tls {
        check_server_tls(out, &format!("{sp}.tls"), t);
    }
    if !port_ok {
        return;
    }
    let Some(p) = Proto::parse(&s.port.protocol) else {
        return;
    };
    match &s.tls {
        None if p.is_tls() => error(
            out,
            format!("{sp}.tls"),
            "server must have TLS settings for HTTPS/TLS protocols; add tls (e.g. mode SIMPLE with a credentialName, or PASSTHROUGH)",
        ),
        Some(t) if !p.is_tls() => {
            if p.is_http() {
                let passthrough = matches!(
                    t.mode.unwrap_or_default(),
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                let certs = [&t.ca_certificates, &t.private_key, &t.server_certificate]
                    .iter()
                    .any(|v| v.as_deref().is_some_and(|x| !x.is_empty()));
                if !passthrough || certs {
                    error(
                        out,
                        format!("{sp}.tls"),
                        "a plain-text HTTP server cannot terminate TLS; use protocol HTTPS, or keep only tls.httpsRedirect",
                    );
                }
            } else {
                error(
                    out,
                    format!("{sp}.tls"),
                    format!(
                        "a {} server cannot have TLS settings; use protocol HTTPS or TLS, or remove tls",
                        s.port.protocol.to_ascii_uppercase()
                    ),
                );
            }
        }
        _ => {}
    }
    if let Some(t) = &s.tls
        && t.mode == Some(ServerTlsMode::AutoPassthrough)
        && p != Proto::Tls
    {
        error(
            out,
            format!("{sp}.tls.mode"),
            "AUTO_PASSTHROUGH works only on servers with protocol TLS; change the port's protocol to TLS",
        );
    }
}

/// Istio's `validateServerPort`; returns whether the port is usable.
fn check_server_port(out: &mut Vec<FieldIssue>, pp: &str, p: &Port, unix: bool) -> bool {
    let mut ok = true;
    if p.protocol.is_empty() {
        error(
            out,
            format!("{pp}.protocol"),
            format!("protocol is required: {PROTOCOLS}"),
        );
        ok = false;
    } else if Proto::parse(&p.protocol).is_none() {
        error(
            out,
            format!("{pp}.protocol"),
            format!(
                "protocol {:?} is not supported; use {PROTOCOLS}",
                p.protocol
            ),
        );
        ok = false;
    }
    if p.number != 0 || !unix {
        if p.number == 0 {
            error(
                out,
                format!("{pp}.number"),
                "port number is required, e.g. 80 or 443",
            );
            ok = false;
        } else if p.number > 65535 {
            check_port(out, format!("{pp}.number"), p.number);
            ok = false;
        }
    }
    if p.name.is_empty() {
        error(
            out,
            format!("{pp}.name"),
            "port name is required, e.g. \"http\" or \"https-443\"",
        );
    }
    if p.target_port.is_some_and(|t| t > 0) {
        warning(
            out,
            format!("{pp}.targetPort"),
            "targetPort has no effect on Gateways; remove it",
        );
    }
    ok
}

/// Istio's `validateTLSOptions` for server TLS, plus the CRD's rules.
pub(crate) fn check_server_tls(out: &mut Vec<FieldIssue>, tp: &str, t: &ServerTlsSettings) {
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let mode = t.mode.unwrap_or_default();
    if !t.credential_names.is_empty() && !t.tls_certificates.is_empty() {
        error(
            out,
            tp,
            "set only one of credentialNames or tlsCertificates",
        );
    }
    if has(&t.credential_name) && !t.credential_names.is_empty() {
        error(out, tp, "set only one of credentialName or credentialNames");
    }
    if t.credential_names.len() > 2 {
        error(
            out,
            format!("{tp}.credentialNames"),
            "credentialNames takes at most 2 secrets (e.g. one RSA and one ECDSA)",
        );
    }
    if t.tls_certificates.len() > 2 {
        error(
            out,
            format!("{tp}.tlsCertificates"),
            "tlsCertificates takes at most 2 certificates (e.g. one RSA and one ECDSA)",
        );
    }
    if mode == ServerTlsMode::IstioMutual {
        for (name, v) in [
            ("serverCertificate", &t.server_certificate),
            ("privateKey", &t.private_key),
            ("caCertificates", &t.ca_certificates),
            ("credentialName", &t.credential_name),
        ] {
            if has(v) {
                error(
                    out,
                    format!("{tp}.{name}"),
                    format!(
                        "ISTIO_MUTUAL uses Istio's own certificates and cannot have {name}; remove it, or use MUTUAL"
                    ),
                );
            }
        }
        return;
    }
    let mut seen = Vec::new();
    for (i, c) in t.cipher_suites.iter().enumerate() {
        let f = format!("{tp}.cipherSuites[{i}]");
        if !is_valid_cipher_suite(c) {
            warning(
                out,
                f,
                format!("cipher suite {c:?} is not supported by Envoy and is ignored"),
            );
        } else if seen.contains(&c) {
            warning(
                out,
                f,
                format!("cipher suite {c:?} is listed twice; the duplicate is ignored"),
            );
        } else {
            seen.push(c);
        }
    }
    if let (Some(min), Some(max)) = (t.min_protocol_version, t.max_protocol_version)
        && min != TlsProtocolVersion::TlsAuto
        && max != TlsProtocolVersion::TlsAuto
        && min > max
    {
        error(
            out,
            format!("{tp}.minProtocolVersion"),
            "minProtocolVersion is above maxProtocolVersion; lower it or raise the maximum",
        );
    }
    let has_credential = has(&t.credential_name) || !t.credential_names.is_empty();
    let terminates = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminates && !has_credential {
        let mode_name = match mode {
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            _ => "OPTIONAL_MUTUAL",
        };
        if t.tls_certificates.is_empty() {
            let missing = set_names(&[
                ("serverCertificate", !has(&t.server_certificate)),
                ("privateKey", !has(&t.private_key)),
            ]);
            if !missing.is_empty() {
                error(
                    out,
                    tp,
                    format!(
                        "{mode_name} TLS needs a credentialName (a Kubernetes secret) or serverCertificate and privateKey; {} missing",
                        missing.join(" and ")
                    ),
                );
            }
        } else {
            for (i, c) in t.tls_certificates.iter().enumerate() {
                if !has(&c.server_certificate) || !has(&c.private_key) {
                    error(
                        out,
                        format!("{tp}.tlsCertificates[{i}]"),
                        "each TLS certificate needs serverCertificate and privateKey",
                    );
                }
            }
        }
        let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
        let has_ca = has(&t.ca_certificates)
            || has(&t.ca_cert_credential_name)
            || t.tls_certificates.iter().any(|c| has(&c.ca_certificates));
        if mutual && !has_ca {
            error(
                out,
                format!("{tp}.caCertificates"),
                format!(
                    "{mode_name} TLS needs caCertificates to verify clients, or a credentialName whose secret has ca.crt"
                ),
            );
        }
    }
}

/// Istio's `validateNamespaceSlashWildcardHostname`: `[namespace/]dnsName` where the
/// namespace is `*`, `.`, a namespace name (or `~` in Sidecars) and the name a
/// fully-qualified or wildcard host. The namespace part is optional on Gateways.
pub(crate) fn check_namespaced_host(
    out: &mut Vec<FieldIssue>,
    field: &str,
    host: &str,
    is_gateway: bool,
) {
    let name = match host.split_once('/') {
        None if is_gateway => host,
        None => {
            error(
                out,
                field,
                format!(
                    "host {host:?} must be of the form <namespace>/<host>, e.g. \"./*\", \"istio-system/*\" or \"*/{host}\""
                ),
            );
            return;
        }
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                error(
                    out,
                    field,
                    format!(
                        "host {host:?} has an empty namespace or host part; use <namespace>/<host>"
                    ),
                );
                return;
            }
            let ns_ok =
                ns == "*" || ns == "." || (!is_gateway && ns == "~") || is_dns1123_label(ns);
            if !ns_ok {
                error(
                    out,
                    field,
                    format!(
                        "namespace {ns:?} in host {host:?} is not valid; use \"*\", \".\" or a namespace name"
                    ),
                );
            }
            name
        }
    };
    if name != "*" && !name.contains('.') {
        error(
            out,
            field,
            format!(
                "short host name {name:?} is not allowed here; use a fully qualified name (e.g. \"{name}.default.svc.cluster.local\") or a wildcard"
            ),
        );
        return;
    }
    if let Err(e) = validate_wildcard_domain(name)
        && !(is_gateway && is_ip(name))
    {
        error(out, field, e);
        return;
    }
    if name.starts_with('*') && name.len() > 1 && !name.starts_with("*.") {
        error(
            out,
            field,
            format!(
                "partial wildcard {name:?} is not allowed; use \"*.\" followed by a domain, e.g. \"*.example.com\""
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::Level::{Error, Warning};
    use crate::istio::testing::{assert_clean, assert_issue, check};

    const KIND: &str = "Gateway";

    #[test]
    fn an_https_gateway_is_clean() {
        let d = check(
            KIND,
            "selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"bookinfo/*.example.com\"]\n  tls: {mode: SIMPLE, credentialName: example-cert}\n- port: {number: 80, name: http, protocol: http}\n  hosts: [\"*\"]\n  tls: {httpsRedirect: true}\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn servers_are_required() {
        let d = check(KIND, "selector: {istio: ingressgateway}\n");
        assert_issue(&d, Error, "spec.servers", "at least one server");
    }

    #[test]
    fn ports() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 0, protocol: HTTP}\n  hosts: [\"*\"]\n- port: {number: 70000, name: b, protocol: QUIC, targetPort: 8080}\n  hosts: [\"*\"]\n",
        );
        assert_issue(&d, Error, "spec.servers[0].port.number", "required");
        assert_issue(
            &d,
            Error,
            "spec.servers[0].port.name",
            "port name is required",
        );
        assert_issue(&d, Error, "spec.servers[1].port.number", "70000");
        assert_issue(
            &d,
            Error,
            "spec.servers[1].port.protocol",
            "\"QUIC\" is not supported",
        );
        assert_issue(&d, Warning, "spec.servers[1].port.targetPort", "no effect");
    }

    #[test]
    fn hosts() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: []\n- port: {number: 81, name: http2, protocol: HTTP}\n  hosts: [\"bad_ns/*.example.com\", \"./reviews\", \"*/foo.*.com\", \"*foo.example.com\", \"ns/\", 10.0.0.1]\n",
        );
        assert_issue(&d, Error, "spec.servers[0].hosts", "at least one host");
        assert_issue(
            &d,
            Error,
            "spec.servers[1].hosts[0]",
            "namespace \"bad_ns\"",
        );
        assert_issue(&d, Error, "spec.servers[1].hosts[1]", "short host name");
        assert_issue(&d, Error, "spec.servers[1].hosts[2]", "\"foo.*.com\"");
        assert_issue(&d, Error, "spec.servers[1].hosts[3]", "partial wildcard");
        assert_issue(
            &d,
            Error,
            "spec.servers[1].hosts[4]",
            "empty namespace or host",
        );
        assert!(
            !d.iter()
                .any(|x| x.field.as_deref() == Some("spec.servers[1].hosts[5]")),
            "{d:#?}"
        );
    }

    #[test]
    fn https_needs_tls_settings() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols",
        );
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE}\n",
        );
        assert_issue(&d, Error, "spec.servers[0].tls", "credentialName");
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[0].tls.caCertificates",
            "verify clients",
        );
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialNames: [a, b], tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[0].tls",
            "credentialNames or tlsCertificates",
        );
    }

    #[test]
    fn tls_settings_on_plain_ports() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialName: c}\n- port: {number: 9000, name: tcp, protocol: TCP}\n  hosts: [\"*\"]\n  tls: {httpsRedirect: true}\n",
        );
        assert_issue(&d, Error, "spec.servers[0].tls", "plain-text HTTP server");
        assert_issue(
            &d,
            Error,
            "spec.servers[1].tls",
            "TCP server cannot have TLS",
        );
        assert_issue(
            &d,
            Warning,
            "spec.servers[1].tls.httpsRedirect",
            "only has an effect on HTTP",
        );
    }

    #[test]
    fn tls_modes() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: AUTO_PASSTHROUGH}\n- port: {number: 8443, name: mtls, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: ISTIO_MUTUAL, credentialName: x}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[0].tls.mode",
            "AUTO_PASSTHROUGH works only",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[1].tls.credentialName",
            "ISTIO_MUTUAL",
        );
        let d = check(
            KIND,
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: STRICTEST}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[0].tls.mode",
            "unknown variant `STRICTEST`",
        );
    }

    #[test]
    fn duplicates_and_port_conflicts() {
        let d = check(
            KIND,
            "servers:\n- name: a\n  port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.example.com]\n  tls: {mode: SIMPLE, credentialName: a}\n- name: a\n  port: {number: 443, name: https, protocol: TLS}\n  hosts: [b.example.com]\n  tls: {mode: PASSTHROUGH}\n- port: {number: 443, name: plain, protocol: HTTP}\n  hosts: [c.example.com]\n",
        );
        assert_issue(&d, Error, "spec.servers[1].name", "server name \"a\"");
        assert_issue(
            &d,
            Error,
            "spec.servers[1].port.name",
            "port name \"https\"",
        );
        assert_issue(
            &d,
            Error,
            "spec.servers[2].port.protocol",
            "port 443 is also used by servers[0]",
        );
        assert!(
            !d.iter()
                .any(|x| x.field.as_deref() == Some("spec.servers[1].port.protocol")),
            "{d:#?}"
        );
    }

    #[test]
    fn bind_and_unix_sockets() {
        let d = check(
            KIND,
            "servers:\n- port: {number: 0, name: uds, protocol: HTTP}\n  bind: unix:///var/run/gw.sock\n  hosts: [\"*\"]\n- port: {number: 80, name: http, protocol: HTTP}\n  bind: not-an-ip\n  hosts: [\"*\"]\n",
        );
        assert_issue(&d, Error, "spec.servers[1].bind", "not an IP");
        assert!(
            !d.iter().any(|x| x
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("spec.servers[0]"))),
            "{d:#?}"
        );
        assert_clean(&check(
            KIND,
            "servers:\n- port: {number: 15443, name: tls, protocol: TLS}\n  hosts: [\"*.local\"]\n  tls: {mode: AUTO_PASSTHROUGH}\n",
        ));
    }

    #[test]
    fn malformed_input() {
        let d = check(
            KIND,
            "servers:\n- port: {number: \"eighty\", name: http, protocol: HTTP}\n  hosts: [\"*\"]\n",
        );
        assert_issue(&d, Error, "spec.servers[0].port.number", "invalid type");
        let d = check(
            KIND,
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: \"*\"\n",
        );
        assert_issue(&d, Error, "spec.servers[0].hosts", "expected a sequence");
    }
}
