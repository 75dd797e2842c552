//! Applying object changes to a cluster: storing and indexing objects, finding the
//! Services and ServiceEntries each change can affect, and recomputing their services.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use internment::ArcIntern;
use isthmus_model::{
    Hostname, Kind, LABEL_NETWORK, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE, Labels, LocalityParts,
    NetworkId, Object, ObjectKey,
};

use crate::model::ClusterService;

use super::objects::{Entry, intern_labels};
use super::{
    ClusterDelta, ClusterState, ObjectChange, is_gateway_service, selector_matches, unit_selector,
};

impl ClusterState {
    /// Applies a batch of changes; returns what changed.
    pub fn apply_all(&mut self, changes: impl IntoIterator<Item = ObjectChange>) -> ClusterDelta {
        let mut units = BTreeSet::new();
        let mut delta = ClusterDelta::default();
        for change in changes {
            self.apply_one(change, &mut units, &mut delta);
        }
        for unit in units {
            self.recompute(&unit, &mut delta.hostnames);
        }
        delta
    }

    /// Applies one change; returns what changed.
    pub fn apply(&mut self, change: ObjectChange) -> ClusterDelta {
        self.apply_all([change])
    }

    fn apply_one(
        &mut self,
        change: ObjectChange,
        units: &mut BTreeSet<ObjectKey>,
        delta: &mut ClusterDelta,
    ) {
        let key = change.key();
        let new = match &change {
            ObjectChange::Upsert(o) => Some(Entry::new(o, &self.ctx)),
            ObjectChange::Delete(_) => None,
        };
        let old = self.objects.get(&key).cloned();
        if old == new {
            return;
        }
        if let Some(o) = &old {
            self.unindex(&key, o);
        }
        match &new {
            Some(o) => {
                self.objects.insert(key.clone(), o.clone());
                self.index(&key, o);
            }
            None => {
                self.objects.remove(&key);
            }
        }
        if key.kind.is_istio() {
            delta.config.push(key.clone());
        } else if key.kind == Kind::Secret {
            delta.secrets.push(key.clone());
        }
        for o in old.iter().chain(new.iter()) {
            if o.object().is_some_and(is_gateway_service) {
                delta.gateways = true;
            }
            self.affected_units(&key, o, units);
        }
    }

    fn index(&mut self, key: &ObjectKey, e: &Entry) {
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    self.slices_by_service
                        .entry((key.namespace.clone(), svc.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
            }
            Entry::Pod(p) => {
                for ip in &p.ips {
                    self.pods_by_ip.insert(*ip, p.clone());
                }
                for (k, v) in p.labels.iter() {
                    self.pods_by_label
                        .entry((key.namespace.clone(), k.clone(), v.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
            }
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    if let Some(sel) = unit_selector(o) {
                        self.selectors
                            .entry(key.namespace.clone())
                            .or_default()
                            .insert(key.clone(), sel);
                    }
                }
                Object::Node(n) => {
                    let l = n.metadata.labels.as_ref();
                    let get = |k: &str| l.and_then(|l| l.get(k)).cloned().unwrap_or_default();
                    let locality = LocalityParts {
                        region: get(LABEL_REGION),
                        zone: get(LABEL_ZONE),
                        subzone: get(LABEL_SUBZONE),
                    };
                    self.node_localities
                        .insert(key.name.clone(), ArcIntern::new(locality));
                }
                Object::Namespace(ns) if key.name.as_ref() == self.ctx.system_namespace => {
                    self.system_network = ns
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_NETWORK))
                        .map(|n| NetworkId::new(n));
                }
                _ => {}
            },
        }
    }

    fn unindex(&mut self, key: &ObjectKey, e: &Entry) {
        fn remove<K: std::hash::Hash + Eq, V: Ord>(m: &mut HashMap<K, BTreeSet<V>>, k: K, v: &V) {
            if let Some(set) = m.get_mut(&k) {
                set.remove(v);
                if set.is_empty() {
                    m.remove(&k);
                }
            }
        }
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    remove(
                        &mut self.slices_by_service,
                        (key.namespace.clone(), svc.clone()),
                        &key.name,
                    );
                }
            }
            Entry::Pod(p) => {
                for ip in &p.ips {
                    if self
                        .pods_by_ip
                        .get(ip)
                        .is_some_and(|q| q.name == p.name && q.namespace == p.namespace)
                    {
                        self.pods_by_ip.remove(ip);
                    }
                }
                for (k, v) in p.labels.iter() {
                    remove(
                        &mut self.pods_by_label,
                        (key.namespace.clone(), k.clone(), v.clone()),
                        &key.name,
                    );
                }
            }
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    if let Some(m) = self.selectors.get_mut(&key.namespace) {
                        m.remove(key);
                    }
                }
                Object::Node(_) => {
                    self.node_localities.remove(&key.name);
                }
                Object::Namespace(_) if key.name.as_ref() == self.ctx.system_namespace => {
                    self.system_network = None;
                }
                _ => {}
            },
        }
    }

    /// The Services and ServiceEntries whose derived state `e` (an old or new version
    /// of the object `key`) can affect.
    fn affected_units(&self, key: &ObjectKey, e: &Entry, units: &mut BTreeSet<ObjectKey>) {
        let ns = &key.namespace;
        let by_selector = |labels: &Labels, pods_too: bool, units: &mut BTreeSet<ObjectKey>| {
            for (unit, sel) in self.selectors.get(ns).into_iter().flatten() {
                if (pods_too || unit.kind == Kind::ServiceEntry) && selector_matches(sel, labels) {
                    units.insert(unit.clone());
                }
            }
        };
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    units.insert(ObjectKey {
                        kind: Kind::Service,
                        namespace: ns.clone(),
                        name: svc.clone(),
                    });
                }
            }
            Entry::Pod(p) => by_selector(&p.labels, true, units),
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    units.insert(key.clone());
                }
                Object::Endpoints(_) => {
                    units.insert(ObjectKey {
                        kind: Kind::Service,
                        namespace: ns.clone(),
                        name: key.name.clone(),
                    });
                }
                Object::WorkloadEntry(we) => {
                    by_selector(&intern_labels(Some(&we.spec.labels)), false, units)
                }
                Object::Node(_) => {
                    // Nodes change rarely: find their pods by a scan rather than keep an index.
                    for (k, e) in &self.objects {
                        if let Entry::Pod(p) = e
                            && p.node.as_ref() == Some(&key.name)
                        {
                            self.affected_units(k, e, units);
                        }
                    }
                }
                Object::Namespace(_) if key.name.as_ref() == self.ctx.system_namespace => {
                    units.extend(
                        self.objects
                            .keys()
                            .filter(|k| matches!(k.kind, Kind::Service | Kind::ServiceEntry))
                            .cloned(),
                    );
                }
                _ => {}
            },
        }
    }

    /// Recomputes the services one Service or ServiceEntry produces.
    fn recompute(&mut self, unit: &ObjectKey, changed: &mut BTreeSet<Hostname>) {
        let fresh: Vec<ClusterService> = match self.get(unit) {
            Some(Object::Service(s)) => self.derive_service(unit, s).into_iter().collect(),
            Some(Object::ServiceEntry(se)) if self.reads_config => {
                self.derive_service_entry(unit, se)
            }
            _ => Vec::new(),
        };
        let old_hosts = self.unit_hosts.remove(unit).unwrap_or_default();
        let new_hosts: Vec<Hostname> = fresh.iter().map(|s| s.hostname.clone()).collect();
        for h in &old_hosts {
            if !new_hosts.contains(h) && self.derived.remove(h).is_some() {
                changed.insert(h.clone());
            }
        }
        for svc in fresh {
            let h = svc.hostname.clone();
            if self.derived.get(&h).is_none_or(|s| **s != svc) {
                self.derived.insert(h.clone(), Arc::new(svc));
                changed.insert(h);
            }
        }
        if !new_hosts.is_empty() {
            self.unit_hosts.insert(unit.clone(), new_hosts);
        }
    }
}
