//! One cluster's objects and the services derived from them, kept up to date
//! incrementally: a change to one object recomputes only the services it can affect.
//!
//! The state and its accessors are here; `objects` has the compact Pod and EndpointSlice
//! summaries, `apply` applies changes and keeps the indexes, and `derive` builds the
//! services and their endpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use isthmus_model::{
    ClusterId, Hostname, LABEL_NETWORK, Labels, Locality, NetworkId, Object, ObjectKey, Str, intern,
};
use k8s_openapi::api::core::v1::Service as KubeService;

use crate::mesh_context::MeshContext;
use crate::model::ClusterService;

mod apply;
mod derive;
mod objects;

use objects::{Entry, PodInfo};

/// An object added or changed (`Upsert`), or removed (`Delete`).
#[derive(Clone, Debug)]
pub enum ObjectChange {
    Upsert(Arc<Object>),
    Delete(ObjectKey),
}

impl ObjectChange {
    pub fn key(&self) -> ObjectKey {
        match self {
            ObjectChange::Upsert(o) => o.key(),
            ObjectChange::Delete(k) => k.clone(),
        }
    }
}

/// What one change did to a cluster.
#[derive(Debug, Default)]
pub struct ClusterDelta {
    /// Hostnames whose derived service changed (added, changed or removed).
    pub hostnames: BTreeSet<Hostname>,
    /// A Service labelled as a network gateway changed.
    pub gateways: bool,
    /// Istio config objects that changed.
    pub config: Vec<ObjectKey>,
    /// Secrets that changed (gateway certificates, by `credentialName`).
    pub secrets: Vec<ObjectKey>,
}

type NsName = (Str, Str);

/// One cluster: its objects, indexes over them, and the services derived from them.
pub struct ClusterState {
    pub id: ClusterId,
    ctx: Arc<MeshContext>,
    /// Whether this cluster's ServiceEntries and WorkloadEntries become services.
    reads_config: bool,
    objects: HashMap<ObjectKey, Entry>,
    slices_by_service: HashMap<NsName, BTreeSet<Str>>,
    pods_by_ip: HashMap<IpAddr, Arc<PodInfo>>,
    /// (namespace, label key, label value) → pod names.
    pods_by_label: HashMap<(Str, Str, Str), BTreeSet<Str>>,
    /// Per namespace: Services with a selector, ServiceEntries with a workloadSelector.
    selectors: HashMap<Str, BTreeMap<ObjectKey, BTreeMap<String, String>>>,
    /// Hostnames each Service / ServiceEntry produced.
    unit_hosts: HashMap<ObjectKey, Vec<Hostname>>,
    derived: HashMap<Hostname, Arc<ClusterService>>,
    /// The system namespace's `topology.istio.io/network` label.
    system_network: Option<NetworkId>,
    /// Locality of each Node, from its topology labels.
    node_localities: HashMap<Str, Locality>,
}

fn str_labels(o: &Object) -> Option<&BTreeMap<String, String>> {
    o.meta().labels.as_ref()
}

fn selector_matches(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.get(&intern(k)).is_some_and(|x| **x == **v))
}

/// The label selector of a Service or of a ServiceEntry's workloadSelector, if any.
fn unit_selector(o: &Object) -> Option<BTreeMap<String, String>> {
    let sel = match o {
        Object::Service(s) => s.spec.as_ref()?.selector.clone()?,
        Object::ServiceEntry(se) => se.spec.workload_selector.as_ref()?.labels.clone(),
        _ => return None,
    };
    (!sel.is_empty()).then_some(sel)
}

fn is_gateway_service(o: &Object) -> bool {
    matches!(o, Object::Service(_)) && str_labels(o).is_some_and(|l| l.contains_key(LABEL_NETWORK))
}

impl ClusterState {
    pub fn new(id: ClusterId, ctx: Arc<MeshContext>, reads_config: bool) -> Self {
        Self {
            id,
            ctx,
            reads_config,
            objects: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods_by_ip: HashMap::new(),
            pods_by_label: HashMap::new(),
            selectors: HashMap::new(),
            unit_hosts: HashMap::new(),
            derived: HashMap::new(),
            system_network: None,
            node_localities: HashMap::new(),
        }
    }

    /// Objects kept whole (every kind but Pods and EndpointSlices).
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().filter_map(Entry::object)
    }

    /// An object kept whole (not Pods and EndpointSlices).
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).and_then(Entry::object)
    }

    /// An object kept whole, shared.
    pub fn get_shared(&self, key: &ObjectKey) -> Option<&Arc<Object>> {
        match self.objects.get(key) {
            Some(Entry::Object(o)) => Some(o),
            _ => None,
        }
    }

    /// How many objects the shard holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn derived(&self) -> &HashMap<Hostname, Arc<ClusterService>> {
        &self.derived
    }

    /// Services labelled as east-west gateways.
    pub fn gateway_services(&self) -> impl Iterator<Item = &KubeService> {
        self.objects().filter_map(|o| match o {
            Object::Service(s) if is_gateway_service(o) => Some(s),
            _ => None,
        })
    }
}
