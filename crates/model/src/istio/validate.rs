//! Validation of Istio specs (placeholder).

use super::*;

macro_rules! no_checks {
    ($($t:ty),*) => {$(
        impl ValidateSpec for $t {
            fn validate(&self, _ctx: &ValidationContext<'_>, _out: &mut Vec<FieldIssue>) {}
        }
    )*};
}
no_checks!(
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication
);

/// Checks of a Kubernetes Service that the API server would reject.
pub fn validate_service(s: &k8s_openapi::api::core::v1::Service, out: &mut Vec<FieldIssue>) {
    let Some(spec) = &s.spec else { return };
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.port) {
            out.push(FieldIssue::error(
                format!("spec.ports[{i}].port"),
                format!("port {} is not between 1 and 65535", p.port),
            ));
        }
        if let Some(n) = &p.name
            && !names.insert(n.clone())
        {
            out.push(FieldIssue::error(
                format!("spec.ports[{i}].name"),
                format!("duplicate port name {n:?}"),
            ));
        }
    }
}
