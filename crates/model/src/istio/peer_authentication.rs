//! `PeerAuthentication`: which mutual TLS mode a workload accepts (security.istio.io).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::common::LabelSelector;
use super::validate::{check_label_selector, error, port_problem};
use super::{FieldIssue, ValidateSpec, ValidationContext};

/// The spec of a PeerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// The workloads it applies to; none means the namespace (or the mesh, in the
    /// root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides, keyed by port number; requires a selector.
    #[serde(
        default,
        deserialize_with = "port_keyed_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_level_mtls: Option<BTreeMap<u32, MutualTls>>,
}

/// Mutual TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutualTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Mutual TLS modes; `UNSET` inherits from the parent policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// A map key that is a port number, written as a YAML integer (`8080:`) or string
/// (`"8080":`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("port {v} is not between 1 and 65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("port {v} is not between 1 and 65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                v.trim().parse().map(PortKey).map_err(|_| {
                    E::custom(format!(
                        "{v:?} is not a port number; key portLevelMtls by port number"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn port_keyed_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<u32, MutualTls>>, D::Error> {
    let m: Option<BTreeMap<PortKey, MutualTls>> = Option::deserialize(d)?;
    Ok(m.map(|m| m.into_iter().map(|(k, v)| (k.0, v)).collect()))
}

impl ValidateSpec for PeerAuthentication {
    fn validate(&self, _ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        let no_selector = self
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty());
        if let Some(ports) = &self.port_level_mtls {
            if ports.is_empty() {
                error(
                    out,
                    "spec.portLevelMtls",
                    "portLevelMtls is empty; list at least one port or remove it",
                );
            } else if no_selector {
                error(
                    out,
                    "spec.portLevelMtls",
                    "portLevelMtls requires selector: port-level mTLS applies only to workloads picked by selector.matchLabels; add a selector",
                );
            }
            for port in ports.keys() {
                if let Some(m) = port_problem(*port) {
                    error(out, format!("spec.portLevelMtls.{port}"), m);
                }
            }
        }
        if let Some(s) = &self.selector {
            check_label_selector(out, "spec.selector", s);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Level::{Error, Warning};
    use crate::document::Object;
    use crate::istio::testing::{assert_issue, check};
    use crate::parse_documents;

    use super::MtlsMode;

    const KIND: &str = "PeerAuthentication";

    #[test]
    fn strict_namespace_policy_is_clean() {
        assert!(check(KIND, "mtls: {mode: STRICT}\n").is_empty());
    }

    #[test]
    fn port_level_mtls_with_integer_and_string_keys() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: foo}\nspec:\n  selector:\n    matchLabels: {app: finance}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    \"9090\": {mode: PERMISSIVE}\n";
        let docs = parse_documents(
            std::path::Path::new("t.yaml"),
            yaml,
            "default",
            "cluster.local",
        );
        assert!(docs[0].diagnostics.is_empty(), "{:#?}", docs[0].diagnostics);
        let Some(Object::PeerAuthentication(pa)) = &docs[0].object else {
            panic!("not parsed: {docs:#?}");
        };
        let ports = pa.spec.port_level_mtls.as_ref().expect("ports");
        assert_eq!(ports[&8080].mode, Some(MtlsMode::Disable));
        assert_eq!(ports[&9090].mode, Some(MtlsMode::Permissive));
    }

    #[test]
    fn port_level_mtls_requires_selector() {
        let d = check(
            KIND,
            "mtls: {mode: STRICT}\nportLevelMtls:\n  8080: {mode: DISABLE}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.portLevelMtls",
            "portLevelMtls requires selector",
        );
        let d = check(
            KIND,
            "selector: {matchLabels: {}}\nportLevelMtls:\n  8080: {mode: DISABLE}\n",
        );
        assert_issue(&d, Error, "spec.portLevelMtls", "requires selector");
        assert_issue(&d, Warning, "spec.selector.matchLabels", "every workload");
    }

    #[test]
    fn port_keys_are_ports() {
        let d = check(
            KIND,
            "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  0: {mode: DISABLE}\n  70000: {mode: STRICT}\n",
        );
        assert_issue(&d, Error, "spec.portLevelMtls.0", "not between 1 and 65535");
        assert_issue(
            &d,
            Error,
            "spec.portLevelMtls.70000",
            "not between 1 and 65535",
        );
        let d = check(
            KIND,
            "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  http: {mode: DISABLE}\n",
        );
        assert_issue(
            &d,
            Error,
            "spec.portLevelMtls.http",
            "\"http\" is not a port number",
        );
        let d = check(
            KIND,
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {}\n",
        );
        assert_issue(&d, Error, "spec.portLevelMtls", "is empty");
    }

    #[test]
    fn modes_and_selector_labels() {
        let d = check(KIND, "mtls: {mode: STRICTEST}\n");
        assert_issue(
            &d,
            Error,
            "spec.mtls.mode",
            "unknown variant `STRICTEST`, expected one of",
        );
        let d = check(
            KIND,
            "selector: {matchLabels: {\"*\": a}}\nmtls: {mode: STRICT}\n",
        );
        assert_issue(&d, Error, "spec.selector.matchLabels.*", "wildcards");
        let d = check(KIND, "mtls: STRICT\n");
        assert_issue(&d, Error, "spec.mtls", "invalid type");
    }
}
