//! Istio's configuration kinds (networking.istio.io v1/v1beta1/v1alpha3,
//! security.istio.io v1/v1beta1), with the fields and constraints of Istio's CRD
//! schemas, and the validation Istio's webhook applies to each.
//!
//! Every spec type deserializes leniently (unknown keys are collected by the document
//! parser and reported as findings, not silently dropped) and validates itself into
//! [`FieldIssue`]s whose paths start at `spec`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::Level;

pub mod common;
pub mod destination_rule;
pub mod enforcement;
pub mod gateway;
pub mod peer_authentication;
pub mod refs;
pub mod service_entry;
pub mod sidecar;
pub mod validate;
pub mod virtual_service;
pub mod workload_entry;

#[cfg(test)]
mod testing;

pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use peer_authentication::PeerAuthentication;
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
pub use workload_entry::WorkloadEntry;

/// An Istio object: the Kubernetes envelope around a typed spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioConfig<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S> IstioConfig<S> {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Istio's short-name resolution: a host without dots (and not a wildcard) names a
/// Service in `namespace`; anything else is taken as written.
pub fn resolve_host(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

/// One problem with one field of a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    pub level: Level,
    /// Path from the document root, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What validation of one spec may need to know about its surroundings.
#[derive(Clone, Copy, Debug)]
pub struct ValidationContext<'a> {
    /// The object's namespace (short hostnames resolve in it).
    pub namespace: &'a str,
    /// The mesh's domain suffix, e.g. `cluster.local`.
    pub domain_suffix: &'a str,
}

/// Validation of a spec the way Istio's validation webhook does it.
pub trait ValidateSpec {
    fn validate(&self, ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>);
}
