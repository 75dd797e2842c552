//! The control plane's log of config it accepts but does not enforce yet: one info line
//! the first time an object sets such a field (the rules are
//! `isthmus_model::istio::enforcement`), again only once the field's entry changes or
//! comes back after the object dropped it.

use std::collections::{BTreeSet, HashMap};

use isthmus_model::istio::enforcement::{NotEnforced, not_enforced};
use isthmus_model::{ClusterId, Object, ObjectKey};

/// What was logged for each config object the registry holds.
#[derive(Debug, Default)]
pub(crate) struct NotEnforcedLog {
    seen: HashMap<ObjectKey, BTreeSet<NotEnforced>>,
}

impl NotEnforcedLog {
    /// Records the new version of the object `key` (`None`: removed) and logs its
    /// entries not logged for it before. Returns them.
    pub(crate) fn update(
        &mut self,
        cluster: &ClusterId,
        key: &ObjectKey,
        object: Option<&Object>,
    ) -> Vec<NotEnforced> {
        let now: BTreeSet<NotEnforced> = object
            .map(|o| not_enforced(o).into_iter().collect())
            .unwrap_or_default();
        let before = self.seen.remove(key).unwrap_or_default();
        let fresh: Vec<NotEnforced> = now.difference(&before).cloned().collect();
        for n in &fresh {
            tracing::info!(%cluster, object = %key, field = %n.field, "{}", n.message);
        }
        if !now.is_empty() {
            self.seen.insert(key.clone(), now);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use isthmus_model::parse_documents;

    use super::*;

    fn dr(tls_mode: &str, extra: &str) -> Object {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {{mode: {tls_mode}}}\n{extra}"
        );
        let mut docs = parse_documents(Path::new("dr.yaml"), &text, "default", "cluster.local");
        docs.remove(0).object.expect("a valid DestinationRule")
    }

    fn fields(v: &[NotEnforced]) -> Vec<&str> {
        v.iter().map(|n| n.field.as_str()).collect()
    }

    #[test]
    fn each_field_is_logged_once_per_object_until_it_changes() {
        let mut log = NotEnforcedLog::default();
        let c = ClusterId::new("c1");
        let tunnel = "    tunnel: {targetHost: proxy, targetPort: 3128}\n";
        let obj = dr("SIMPLE", tunnel);
        let key = obj.key();
        assert_eq!(
            fields(&log.update(&c, &key, Some(&obj))),
            ["spec.trafficPolicy.tunnel"]
        );
        // Applied again, or changed elsewhere: nothing new.
        assert!(log.update(&c, &key, Some(&obj)).is_empty());
        assert!(
            log.update(&c, &key, Some(&dr("ISTIO_MUTUAL", tunnel)))
                .is_empty()
        );
        let more = dr(
            "SIMPLE",
            &format!("{tunnel}    loadBalancer: {{backendUtilization: {{}}}}\n"),
        );
        assert_eq!(
            fields(&log.update(&c, &key, Some(&more))),
            ["spec.trafficPolicy.loadBalancer.backendUtilization"]
        );
        // The field goes, then comes back: logged again.
        assert!(log.update(&c, &key, Some(&dr("SIMPLE", ""))).is_empty());
        assert_eq!(
            fields(&log.update(&c, &key, Some(&obj))),
            ["spec.trafficPolicy.tunnel"]
        );
        // Removed, then added again: logged again.
        assert!(log.update(&c, &key, None).is_empty());
        assert!(log.seen.is_empty());
        assert_eq!(log.update(&c, &key, Some(&obj)).len(), 1);
    }

    #[test]
    fn objects_without_such_fields_are_not_kept() {
        let mut log = NotEnforcedLog::default();
        let obj = dr("SIMPLE", "");
        assert!(
            log.update(&ClusterId::new("c1"), &obj.key(), Some(&obj))
                .is_empty()
        );
        assert!(log.seen.is_empty());
    }
}
