//! `WorkloadEntry`: a non-Kubernetes workload (a VM), also the shape of ServiceEntry endpoints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::validate::{check_labels, check_port, error, is_ip, validate_fqdn};
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a WorkloadEntry, and one endpoint of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP, host name (DNS resolution) or `unix://` socket. Required unless `network`
    /// is set (then the network's gateway is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port numbers by service port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

// ---------------------------------------------------------------------------
// Validation

/// The CRD's port name rule: shorter than 63 characters,
/// `[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?`.
fn is_endpoint_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && s.len() < 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Where an endpoint is checked from.
pub(crate) enum EndpointOf<'a> {
    /// A WorkloadEntry object: addresses may be IPs, host names or unix sockets.
    WorkloadEntry,
    /// A ServiceEntry endpoint: its ports must be named by the ServiceEntry, and
    /// host names are allowed only with DNS resolution.
    ServiceEntry {
        port_names: &'a BTreeSet<&'a str>,
        allow_hostnames: bool,
    },
}

fn check_max(out: &mut Vec<FieldIssue>, field: String, what: &str, len: usize, max: usize) {
    if len > max {
        error(
            out,
            field,
            format!("{what} is {len} long; at most {max} is allowed"),
        );
    }
}

/// Istio's `validateWorkloadEntry`, plus the CRD's rules (address required unless
/// `network` is set, unix socket forms, port names and numbers, lengths).
pub(crate) fn check_workload_entry(
    out: &mut Vec<FieldIssue>,
    p: &str,
    we: &WorkloadEntry,
    of: EndpointOf<'_>,
) {
    let addr = we.address.as_deref().unwrap_or_default();
    let af = format!("{p}.address");
    if addr.is_empty() {
        if we.network.as_deref().is_none_or(str::is_empty) {
            error(
                out,
                &af,
                "address is required (an IP, a host name or unix://path); leave it out only when network is set",
            );
        }
    } else if addr.len() > 256 {
        check_max(out, af.clone(), "the address", addr.len(), 256);
    } else if let Some(path) = addr.strip_prefix("unix://") {
        if !(path.starts_with('/') || path.starts_with('@')) {
            error(
                out,
                &af,
                format!(
                    "unix socket {addr:?} must be an absolute path (unix:///path) or an abstract socket (unix://@name)"
                ),
            );
        } else if path.ends_with('/') {
            error(
                out,
                &af,
                format!("unix socket {addr:?} names a directory; name the socket file"),
            );
        }
        if !we.ports.is_empty() {
            error(
                out,
                format!("{p}.ports"),
                "a unix:// endpoint cannot have ports; remove them",
            );
        }
        if let EndpointOf::ServiceEntry { port_names, .. } = &of
            && port_names.len() != 1
        {
            error(
                out,
                &af,
                "a unix:// endpoint needs a ServiceEntry with exactly one port",
            );
        }
    } else if !is_ip(addr) {
        match &of {
            EndpointOf::ServiceEntry {
                allow_hostnames: false,
                ..
            } => error(
                out,
                &af,
                format!(
                    "endpoint address {addr:?} is not an IP address; STATIC resolution needs IPs (or unix:// sockets), use resolution DNS for host names"
                ),
            ),
            _ => {
                if validate_fqdn(addr).is_err() {
                    error(
                        out,
                        &af,
                        format!("address {addr:?} is not a valid IP address or host name"),
                    );
                }
            }
        }
    }

    check_max(out, format!("{p}.ports"), "ports", we.ports.len(), 128);
    for (name, port) in &we.ports {
        let f = format!("{p}.ports.{name}");
        if !is_endpoint_port_name(name) {
            error(
                out,
                &f,
                format!(
                    "port name {name:?} is not valid; use letters, digits and '-' (shorter than 63 characters, starting and ending with a letter or digit)"
                ),
            );
        }
        check_port(out, &f, *port);
        if let EndpointOf::ServiceEntry { port_names, .. } = &of
            && !port_names.contains(name.as_str())
        {
            let declared: Vec<&str> = port_names.iter().copied().collect();
            error(
                out,
                &f,
                format!(
                    "endpoint port {name:?} is not a port of the ServiceEntry (declared: [{}]); use one of spec.ports[].name",
                    declared.join(", ")
                ),
            );
        }
    }
    check_max(out, format!("{p}.labels"), "labels", we.labels.len(), 256);
    check_labels(out, &format!("{p}.labels"), &we.labels);
    if let Some(n) = &we.network {
        check_max(out, format!("{p}.network"), "network", n.len(), 2048);
    }
    if let Some(l) = &we.locality {
        check_max(out, format!("{p}.locality"), "locality", l.len(), 2048);
    }
    if let Some(sa) = &we.service_account {
        check_max(
            out,
            format!("{p}.serviceAccount"),
            "serviceAccount",
            sa.len(),
            253,
        );
    }
}

impl ValidateSpec for WorkloadEntry {
    fn validate(&self, _ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        check_workload_entry(out, "spec", self, EndpointOf::WorkloadEntry);
    }
}

#[cfg(test)]
mod tests {
    use crate::Level::Error;
    use crate::istio::testing::{assert_issue, check};

    const KIND: &str = "WorkloadEntry";

    #[test]
    fn a_vm_is_clean() {
        let d = check(
            KIND,
            "address: 10.0.0.5\nports: {http: 8080, grpc-x: 9000}\nlabels: {app: ratings, version: v1}\nserviceAccount: ratings\nnetwork: vm-net\nlocality: us-west/zone1\nweight: 3\n",
        );
        assert!(d.is_empty(), "{d:#?}");
        assert!(check(KIND, "address: vm1.example.com\n").is_empty());
        assert!(check(KIND, "network: remote\n").is_empty());
    }

    #[test]
    fn address_rules() {
        let d = check(KIND, "labels: {app: a}\n");
        assert_issue(&d, Error, "spec.address", "address is required");
        let d = check(KIND, &format!("address: {}.com\n", "a".repeat(260)));
        assert_issue(&d, Error, "spec.address", "at most 256");
        let d = check(KIND, "address: \"not an address\"\n");
        assert_issue(
            &d,
            Error,
            "spec.address",
            "not a valid IP address or host name",
        );
        let d = check(KIND, "address: unix://relative/path\n");
        assert_issue(&d, Error, "spec.address", "absolute path");
        let d = check(KIND, "address: unix:///var/run/\nports: {http: 80}\n");
        assert_issue(&d, Error, "spec.address", "directory");
        assert_issue(&d, Error, "spec.ports", "cannot have ports");
    }

    #[test]
    fn ports_and_labels() {
        let d = check(
            KIND,
            "address: 10.0.0.5\nports: {http: 0, \"-bad\": 80, big: 70000}\nlabels: {\"bad key!\": x}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.ports.http",
            "port 0 is not between 1 and 65535",
        );
        assert_issue(&d, Error, "spec.ports.-bad", "port name \"-bad\"");
        assert_issue(&d, Error, "spec.ports.big", "70000");
        assert_issue(&d, Error, "spec.labels.bad key!", "label key");
        let d = check(KIND, "address: 10.0.0.5\nports: {http: \"eighty\"}\n");
        assert_issue(&d, Error, "spec.ports.http", "invalid type");
        let d = check(KIND, "address: 10.0.0.5\nweight: -1\n");
        assert_issue(&d, Error, "spec.weight", "invalid value");
    }
}
