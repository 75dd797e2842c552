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

/// One PeerAuthentication as composition reads it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The creation timestamp, RFC 3339 (sorts as time); empty when unknown.
    pub created: &'a str,
    pub spec: &'a PeerAuthentication,
}

/// The mutual TLS a workload accepts: a mode (never `UNSET`) and per-port overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EffectiveMtls {
    pub mode: EffectiveMode,
    pub ports: BTreeMap<u32, EffectiveMode>,
}

/// A composed mode: `UNSET` has been resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EffectiveMode {
    Disable,
    #[default]
    Permissive,
    Strict,
}

impl EffectiveMtls {
    /// The mode on `port`.
    pub fn for_port(&self, port: u32) -> EffectiveMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

fn resolve(mode: Option<MtlsMode>, parent: EffectiveMode) -> EffectiveMode {
    match mode.unwrap_or_default() {
        MtlsMode::Unset => parent,
        MtlsMode::Disable => EffectiveMode::Disable,
        MtlsMode::Permissive => EffectiveMode::Permissive,
        MtlsMode::Strict => EffectiveMode::Strict,
    }
}

/// The mutual TLS in effect for a workload in `namespace` with `labels`, as Istio's
/// `ComposePeerAuthentication` (pilot/pkg/security/authn/policy_applier.go) composes
/// it: PERMISSIVE unless a policy says otherwise; the mesh policy (root namespace, no
/// selector), then the namespace's (no selector), then the workload's (a selector that
/// matches, not in the root namespace) each override the level above, `UNSET`
/// inheriting; among several at one level the oldest wins; the workload policy's
/// `portLevelMtls` overrides per port (`UNSET` inheriting the workload's mode).
pub fn compose<'a>(
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    policies: impl IntoIterator<Item = PolicyRef<'a>>,
) -> EffectiveMtls {
    let older = |a: &PolicyRef, b: &PolicyRef| (a.created, a.name) < (b.created, b.name);
    let (mut mesh, mut ns, mut workload): (
        Option<PolicyRef>,
        Option<PolicyRef>,
        Option<PolicyRef>,
    ) = (None, None, None);
    for p in policies {
        let selector = p
            .spec
            .selector
            .as_ref()
            .filter(|s| !s.match_labels.is_empty());
        let slot = match selector {
            None if p.namespace == root_namespace => &mut mesh,
            None if p.namespace == namespace => &mut ns,
            Some(sel)
                if p.namespace == namespace
                    && p.namespace != root_namespace
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v)) =>
            {
                &mut workload
            }
            _ => continue,
        };
        if slot.as_ref().is_none_or(|cur| older(&p, cur)) {
            *slot = Some(p);
        }
    }
    let mut mode = EffectiveMode::Permissive;
    for level in [mesh, ns, workload].iter().flatten() {
        mode = resolve(level.spec.mtls.as_ref().and_then(|m| m.mode), mode);
    }
    let ports = workload
        .and_then(|w| w.spec.port_level_mtls.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|(port, m)| (*port, resolve(m.mode, mode)))
                .collect()
        })
        .unwrap_or_default();
    EffectiveMtls { mode, ports }
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

    #[test]
    fn composition_follows_istio() {
        use super::{EffectiveMode, PeerAuthentication, PolicyRef, compose};
        use std::collections::BTreeMap;
        let pa = |yaml: &str| -> PeerAuthentication { serde_yaml_ng::from_str(yaml).unwrap() };
        let strict = pa("mtls: {mode: STRICT}");
        let disable = pa("mtls: {mode: DISABLE}");
        let unset = pa("mtls: {mode: UNSET}");
        let workload = pa(
            "selector: {matchLabels: {app: reviews}}\nmtls: {mode: STRICT}\nportLevelMtls:\n  9080: {mode: DISABLE}\n  9081: {mode: UNSET}\n",
        );
        let r = |namespace, name, created, spec| PolicyRef {
            namespace,
            name,
            created,
            spec,
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "reviews".to_string())].into();
        let none = BTreeMap::new();
        let m = |ps: Vec<PolicyRef>, labels| compose("istio-system", "bookinfo", labels, ps);
        // Nothing: PERMISSIVE.
        assert_eq!(m(vec![], &labels).mode, EffectiveMode::Permissive);
        // Mesh STRICT, namespace UNSET inherits it; namespace DISABLE overrides.
        assert_eq!(
            m(
                vec![
                    r("istio-system", "default", "", &strict),
                    r("bookinfo", "ns", "", &unset)
                ],
                &labels
            )
            .mode,
            EffectiveMode::Strict
        );
        assert_eq!(
            m(
                vec![
                    r("istio-system", "default", "", &strict),
                    r("bookinfo", "ns", "", &disable)
                ],
                &labels
            )
            .mode,
            EffectiveMode::Disable
        );
        // Another namespace's policy does not apply.
        assert_eq!(
            m(vec![r("other", "ns", "", &disable)], &labels).mode,
            EffectiveMode::Permissive
        );
        // Workload policy over the namespace's, port-level over that; UNSET port inherits.
        let e = m(
            vec![
                r("bookinfo", "ns", "", &disable),
                r("bookinfo", "w", "", &workload),
            ],
            &labels,
        );
        assert_eq!(e.mode, EffectiveMode::Strict);
        assert_eq!(e.for_port(9080), EffectiveMode::Disable);
        assert_eq!(e.for_port(9081), EffectiveMode::Strict);
        assert_eq!(e.for_port(1), EffectiveMode::Strict);
        // A selector that does not match: not applied.
        assert_eq!(
            m(vec![r("bookinfo", "w", "", &workload)], &none).mode,
            EffectiveMode::Permissive
        );
        // Two at one level: the oldest wins.
        let e = m(
            vec![
                r("bookinfo", "b", "2026-01-02T00:00:00Z", &strict),
                r("bookinfo", "a", "2026-01-01T00:00:00Z", &disable),
            ],
            &labels,
        );
        assert_eq!(e.mode, EffectiveMode::Disable);
        // A selector policy in the root namespace is ignored (Istio: workload policies
        // never live there).
        let root_sel = pa("selector: {matchLabels: {app: reviews}}\nmtls: {mode: DISABLE}\n");
        assert_eq!(
            compose(
                "bookinfo",
                "bookinfo",
                &labels,
                [r("bookinfo", "x", "", &root_sel)]
            )
            .mode,
            EffectiveMode::Permissive
        );
    }
}
