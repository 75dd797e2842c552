//! `ServiceEntry`: hosts Istio's registry doesn't know from Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::WorkloadSelector;
use super::validate::{
    Proto, check_export_to, check_port, check_port_name, check_protocol, check_workload_selector,
    error, validate_fqdn, validate_ip_subnet, validate_wildcard_domain, warning,
};
use super::workload_entry::{EndpointOf, WorkloadEntry, check_workload_entry};
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Host names of the service (no bare `*`). Required.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR ranges of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints; not with `resolution: NONE` nor with `workloadSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    /// Selects WorkloadEntries and Pods as endpoints instead of `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of the service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Whether the service is part of the mesh (mTLS, ...) or outside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

/// How the proxy finds the service's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// Ports by name, e.g. of a WorkloadEntry.
pub type PortMap = BTreeMap<String, u32>;

// ---------------------------------------------------------------------------
// Validation

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

impl ValidateSpec for ServiceEntry {
    fn validate(&self, ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        let resolution = self.resolution.unwrap_or_default();
        let endpoints = self.endpoints.as_deref().unwrap_or_default();

        if let Some(ws) = &self.workload_selector {
            if self.endpoints.is_some() {
                error(
                    out,
                    "spec.workloadSelector",
                    "set only one of workloadSelector or endpoints",
                );
            }
            check_workload_selector(out, "spec.workloadSelector", ws);
        }

        // Hosts.
        if self.hosts.is_empty() {
            error(
                out,
                "spec.hosts",
                "a ServiceEntry needs at least one host, e.g. \"api.example.com\"",
            );
        } else if self.hosts.len() > 256 {
            error(
                out,
                "spec.hosts",
                format!(
                    "{} hosts are too many; at most 256 are allowed",
                    self.hosts.len()
                ),
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let f = format!("spec.hosts[{i}]");
            if h == "*" {
                error(
                    out,
                    f,
                    "host \"*\" is not allowed in a ServiceEntry; use a wildcard with a domain, e.g. \"*.example.com\"",
                );
            } else if let Err(e) = validate_wildcard_domain(h) {
                error(out, f, e);
            } else if h.starts_with('*') && !h.starts_with("*.") {
                warning(
                    out,
                    f,
                    format!(
                        "partial wildcard {h:?} is discouraged; use \"*.\" followed by a domain"
                    ),
                );
            }
        }

        // Addresses.
        if self.addresses.len() > 256 {
            error(
                out,
                "spec.addresses",
                format!(
                    "{} addresses are too many; at most 256 are allowed",
                    self.addresses.len()
                ),
            );
        }
        for (i, a) in self.addresses.iter().enumerate() {
            let f = format!("spec.addresses[{i}]");
            if a.len() > 64 {
                error(
                    out,
                    f,
                    format!(
                        "address is {} characters long; at most 64 are allowed",
                        a.len()
                    ),
                );
            } else if let Err(e) = validate_ip_subnet(a) {
                error(out, f, e);
            } else if a.contains('/')
                && !matches!(resolution, Resolution::None | Resolution::Static)
            {
                error(
                    out,
                    f,
                    format!(
                        "CIDR addresses are allowed only with resolution NONE or STATIC, not {}; use single IPs or change the resolution",
                        resolution.name()
                    ),
                );
            }
        }

        // Ports.
        if self.ports.len() > 256 {
            error(
                out,
                "spec.ports",
                format!(
                    "{} ports are too many; at most 256 are allowed",
                    self.ports.len()
                ),
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            check_port_name(out, format!("{pp}.name"), &p.name);
            if !p.name.is_empty()
                && let Some(j) = names.insert(&p.name, i)
            {
                error(
                    out,
                    format!("{pp}.name"),
                    format!(
                        "port name {:?} is already used by ports[{j}]; port names must be unique",
                        p.name
                    ),
                );
            }
            check_port(out, format!("{pp}.number"), p.number);
            if let Some(j) = numbers.insert(p.number, i) {
                error(
                    out,
                    format!("{pp}.number"),
                    format!(
                        "port {} is already defined by ports[{j}]; port numbers must be unique",
                        p.number
                    ),
                );
            }
            if let Some(proto) = &p.protocol {
                check_protocol(out, format!("{pp}.protocol"), proto);
            }
            if let Some(t) = p.target_port {
                check_port(out, format!("{pp}.targetPort"), t);
            }
        }
        let port_names: BTreeSet<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();

        // Resolution and endpoints (the CRD's rules and Istio's).
        match resolution {
            Resolution::None => {
                if self.endpoints.is_some() {
                    error(
                        out,
                        "spec.endpoints",
                        "resolution NONE cannot have endpoints; use STATIC or DNS, or remove endpoints",
                    );
                }
                if self.workload_selector.is_some() {
                    warning(
                        out,
                        "spec.workloadSelector",
                        "workloadSelector has no effect with resolution NONE; use STATIC",
                    );
                }
            }
            Resolution::DynamicDns => {
                if self.endpoints.is_some() {
                    error(
                        out,
                        "spec.endpoints",
                        "resolution DYNAMIC_DNS resolves each request's host itself and cannot have endpoints; remove them or use DNS",
                    );
                }
            }
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {
                let dns = resolution != Resolution::Static;
                if dns && endpoints.is_empty() {
                    for (i, h) in self.hosts.iter().enumerate() {
                        if h != "*"
                            && validate_wildcard_domain(h).is_ok()
                            && validate_fqdn(h).is_err()
                        {
                            error(
                                out,
                                format!("spec.hosts[{i}]"),
                                format!(
                                    "host {h:?} must be a fully qualified name without wildcards when resolution is {} and there are no endpoints; add endpoints, or use resolution NONE or DYNAMIC_DNS",
                                    resolution.name()
                                ),
                            );
                        }
                    }
                }
                if resolution == Resolution::DnsRoundRobin && endpoints.len() > 1 {
                    error(
                        out,
                        "spec.endpoints",
                        "resolution DNS_ROUND_ROBIN allows at most one endpoint; use DNS for several",
                    );
                }
                for (i, ep) in endpoints.iter().enumerate() {
                    check_workload_entry(
                        out,
                        &format!("spec.endpoints[{i}]"),
                        ep,
                        EndpointOf::ServiceEntry {
                            port_names: &port_names,
                            allow_hostnames: dns,
                        },
                    );
                }
            }
        }
        if endpoints.len() > 4096 {
            error(
                out,
                "spec.endpoints",
                format!(
                    "{} endpoints are too many; at most 4096 are allowed",
                    endpoints.len()
                ),
            );
        }

        // Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports
        // unless resolution is NONE (hosts are then ignored).
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self.ports.iter().position(|p| {
                !p.protocol
                    .as_deref()
                    .and_then(Proto::parse)
                    .is_some_and(|x| x.is_http() || x.is_tls())
            });
            if let Some(i) = opaque {
                error(
                    out,
                    format!("spec.ports[{i}].protocol"),
                    format!(
                        "several hosts with resolution {} need HTTP or TLS ports, since plain TCP cannot tell the hosts apart; split the ServiceEntry per host, or set an HTTP/TLS protocol",
                        resolution.name()
                    ),
                );
            }
        }

        check_export_to(
            out,
            "spec.exportTo",
            ctx.namespace,
            &self.export_to,
            true,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::Level::{Error, Warning};
    use crate::istio::testing::{assert_clean, assert_issue, check};

    const KIND: &str = "ServiceEntry";

    #[test]
    fn external_api_is_clean() {
        let d = check(
            KIND,
            "hosts: [api.example.com]\nlocation: MESH_EXTERNAL\nports:\n- {number: 443, name: https, protocol: TLS}\nresolution: DNS\n",
        );
        assert!(d.is_empty(), "{d:#?}");
        let d = check(
            KIND,
            "hosts: [db.internal]\naddresses: [10.1.0.0/16]\nports:\n- {number: 5432, name: tcp-pg, protocol: TCP}\nresolution: STATIC\nendpoints:\n- address: 10.1.2.3\n  ports: {tcp-pg: 15432}\n- address: unix:///var/run/pg.sock\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn hosts() {
        let d = check(KIND, "ports:\n- {number: 80, name: http}\n");
        assert_issue(&d, Error, "spec.hosts", "at least one host");
        let d = check(
            KIND,
            "hosts: [\"*\", \"bad host\", \"*foo.com\"]\nports:\n- {number: 80, name: http, protocol: HTTP}\n",
        );
        assert_issue(&d, Error, "spec.hosts[0]", "\"*\" is not allowed");
        assert_issue(&d, Error, "spec.hosts[1]", "\"bad host\"");
        assert_issue(&d, Warning, "spec.hosts[2]", "partial wildcard");
    }

    #[test]
    fn ports() {
        let d = check(
            KIND,
            "hosts: [a.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\n- {number: 80, name: http, protocol: SPDY}\n- {number: 0, targetPort: 70000}\n",
        );
        assert_issue(&d, Error, "spec.ports[1].name", "already used by ports[0]");
        assert_issue(
            &d,
            Error,
            "spec.ports[1].number",
            "already defined by ports[0]",
        );
        assert_issue(&d, Error, "spec.ports[1].protocol", "\"SPDY\"");
        assert_issue(&d, Error, "spec.ports[2].name", "port name is required");
        assert_issue(&d, Error, "spec.ports[2].number", "port 0");
        assert_issue(&d, Error, "spec.ports[2].targetPort", "70000");
        let d = check(KIND, "hosts: [a.com]\nports:\n- {name: http}\n");
        assert_issue(&d, Error, "spec.ports[0]", "missing field `number`");
    }

    #[test]
    fn resolution_rules() {
        let d = check(KIND, "hosts: [a.com]\nendpoints:\n- address: 1.1.1.1\n");
        assert_issue(
            &d,
            Error,
            "spec.endpoints",
            "resolution NONE cannot have endpoints",
        );
        let d = check(
            KIND,
            "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nendpoints:\n- address: a1.com\n- address: a2.com\n",
        );
        assert_issue(&d, Error, "spec.endpoints", "at most one endpoint");
        let d = check(
            KIND,
            "hosts: [a.com]\naddresses: [10.0.0.0/8, 300.1.1.1]\nresolution: DNS\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.addresses[0]",
            "CIDR addresses are allowed only with resolution NONE or STATIC",
        );
        assert_issue(&d, Error, "spec.addresses[1]", "\"300.1.1.1\"");
        let d = check(
            KIND,
            "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: []\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.workloadSelector",
            "only one of workloadSelector or endpoints",
        );
        let d = check(KIND, "hosts: [\"*.example.com\"]\nresolution: DNS\n");
        assert_issue(&d, Error, "spec.hosts[0]", "fully qualified");
        assert_clean(&check(
            KIND,
            "hosts: [\"*.example.com\"]\nresolution: DYNAMIC_DNS\nports:\n- {number: 443, name: tls, protocol: TLS}\n",
        ));
        let d = check(KIND, "hosts: [a.com]\nresolution: MAGIC\n");
        assert_issue(&d, Error, "spec.resolution", "unknown variant `MAGIC`");
        let d = check(KIND, "hosts: [a.com]\nlocation: MESH_NEARBY\n");
        assert_issue(&d, Error, "spec.location", "unknown variant `MESH_NEARBY`");
    }

    #[test]
    fn endpoints() {
        let d = check(
            KIND,
            "hosts: [a.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\nresolution: STATIC\nendpoints:\n- address: vm.example.com\n- address: 10.0.0.1\n  ports: {grpc: 9000}\n- labels: {app: a}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.endpoints[0].address",
            "not an IP address; STATIC resolution needs IPs",
        );
        assert_issue(
            &d,
            Error,
            "spec.endpoints[1].ports.grpc",
            "not a port of the ServiceEntry (declared: [http])",
        );
        assert_issue(
            &d,
            Error,
            "spec.endpoints[2].address",
            "address is required",
        );
        let d = check(
            KIND,
            "hosts: [a.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\nresolution: DNS\nendpoints:\n- address: vm.example.com\n  ports: {http: 8080}\n- address: \"bad address\"\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.endpoints[1].address",
            "not a valid IP address or host name",
        );
        assert!(
            !d.iter()
                .any(|x| x.field.as_deref() == Some("spec.endpoints[0].address")),
            "{d:#?}"
        );
    }

    #[test]
    fn several_hosts_need_http_or_tls_ports() {
        let d = check(
            KIND,
            "hosts: [a.com, b.com]\nports:\n- {number: 443, name: https, protocol: HTTPS}\n- {number: 3306, name: mysql, protocol: TCP}\nresolution: DNS\n",
        );
        assert_issue(&d, Error, "spec.ports[1].protocol", "several hosts");
        let d = check(
            KIND,
            "hosts: [a.com, b.com]\nports:\n- {number: 3306, name: mysql, protocol: TCP}\nresolution: NONE\n",
        );
        assert_clean(&d);
    }

    #[test]
    fn export_to_allows_none_only_alone() {
        assert_clean(&check(KIND, "hosts: [a.com]\nexportTo: [\"~\"]\n"));
        let d = check(KIND, "hosts: [a.com]\nexportTo: [\"~\", \".\"]\n");
        assert_issue(&d, Error, "spec.exportTo", "\"~\"");
    }

    #[test]
    fn malformed_input() {
        let d = check(KIND, "hosts: a.com\n");
        assert_issue(&d, Error, "spec.hosts", "expected a sequence");
        let d = check(KIND, "hosts: [a.com]\nprots: []\n");
        assert!(
            d.iter()
                .any(|x| x.field.as_deref() == Some("spec.prots") && x.code == "ISM0002"),
            "{d:#?}"
        );
    }
}
