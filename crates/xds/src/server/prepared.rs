//! A generated config as the server pushes it: each type's version, its differences
//! from the configs it replaced, and the encoded changes connections send from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use imbl::ordmap::DiffItem;

use super::lock;
use super::subscription::{NameSet, Subscription};
use super::wire;
use crate::resources::{ByName, PerType, ProxyResources, Resource, TypeUrl};

/// What changed of one type between two configs.
#[derive(Debug, Default)]
struct TypeDiff {
    /// Added or changed.
    changed: Vec<String>,
    removed: Vec<String>,
}

impl TypeDiff {
    /// Visits only what the two maps don't share: a config derived from another by
    /// replacing a few resources is compared in time proportional to those.
    fn between(old: Option<&ByName>, new: Option<&ByName>) -> Self {
        let empty = ByName::new();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let mut d = Self::default();
        for item in old.diff(new) {
            match item {
                DiffItem::Add(name, _) | DiffItem::Update { new: (name, _), .. } => {
                    d.changed.push(name.clone())
                }
                DiffItem::Remove(name, _) => d.removed.push(name.clone()),
            }
        }
        d
    }
}

type Diff = PerType<TypeDiff>;

/// A generated config as the server pushes it: the version of each type's resources,
/// and its differences from the configs it replaced, each computed once and shared by
/// every connection holding the config.
pub(super) struct Prepared {
    pub(super) res: Arc<ProxyResources>,
    versions: PerType<u64>,
    diffs: Mutex<Vec<(Weak<Prepared>, Arc<Diff>)>>,
    /// Changes being sent from this config, shared by the connections that send the
    /// same ones at the same time (a push, a mesh of proxies connecting).
    shared: Mutex<SharedChanges>,
}

/// Which response message a [`Changes`] is encoded for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Wire {
    Sotw,
    Delta,
}

/// What one response carries of a type, encoded: the run of resource fields (field 2
/// of `DiscoveryResponse` or `DeltaDiscoveryResponse`) and, for Delta, the removed
/// names. A connection frames it with its own version and nonce; the encoded
/// resources themselves are one buffer however many connections send them.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(super) wire: Vec<u8>,
    /// Resources in `wire`, and their encoded size.
    pub(super) count: usize,
    pub(super) bytes: usize,
    pub(super) removed: Vec<String>,
}

impl Changes {
    pub(super) fn new(kind: Wire, resources: &[&Resource], removed: Vec<String>) -> Self {
        Self {
            wire: wire::encode_resources(kind, resources),
            count: resources.len(),
            bytes: resources.iter().map(|r| r.any.value.len()).sum(),
            removed,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0 && self.removed.is_empty()
    }
}

/// A subscription as part of a [`ChangeKey`]: whether it is a wildcard, and its
/// [`Subscription::identity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SubKey {
    wildcard: bool,
    names: usize,
}

impl SubKey {
    fn of(sub: &Subscription) -> Self {
        Self {
            wildcard: sub.is_wildcard(),
            names: sub.identity(),
        }
    }
}

/// What identifies shared changes. The shared objects (base config, name sets) are
/// named by their addresses, kept from reuse by the entry's weak references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ChangeKey {
    wire: Wire,
    type_url: TypeUrl,
    /// The config the proxy holds; 0 for none (everything selected is sent).
    base: usize,
    /// The subscription before and after.
    old: SubKey,
    new: SubKey,
}

struct SharedEntry {
    changes: Weak<Changes>,
    _base: Option<Weak<Prepared>>,
    _old: Weak<NameSet>,
    _new: Weak<NameSet>,
}

#[derive(Default)]
struct SharedChanges {
    entries: HashMap<ChangeKey, SharedEntry>,
    prune_at: usize,
}

/// The version of one type's resources: a hash of their names and versions.
fn type_version(m: Option<&ByName>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for r in m.into_iter().flat_map(|m| m.values()) {
        h.update(r.name.as_bytes());
        h.update(&[0]);
        h.update(r.version.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

impl Prepared {
    pub(super) fn new(res: Arc<ProxyResources>) -> Self {
        Self {
            versions: PerType::from_fn(|t| type_version(res.of_type(t))),
            res,
            diffs: Mutex::new(Vec::new()),
            shared: Mutex::default(),
        }
    }

    /// The changes a proxy that holds `base`'s resources of a type (none: nothing
    /// yet), as selected by `old`, is sent to hold this config's as selected by `new`.
    /// Computed and encoded once for every connection that needs the same ones while
    /// an earlier response with them is still on its way.
    pub(super) fn changes(
        &self,
        wire: Wire,
        base: Option<&Arc<Prepared>>,
        t: TypeUrl,
        old: &Subscription,
        new: &Subscription,
    ) -> Arc<Changes> {
        // Without a base the old subscription plays no part.
        let old = if base.is_some() { old } else { new };
        let key = ChangeKey {
            wire,
            type_url: t,
            base: base.map_or(0, |b| Arc::as_ptr(b) as usize),
            old: SubKey::of(old),
            new: SubKey::of(new),
        };
        let mut shared = lock(&self.shared);
        if let Some(c) = shared.entries.get(&key).and_then(|e| e.changes.upgrade()) {
            return c;
        }
        let (resources, removed) = match base {
            Some(base) => self.changes_since(base, t, old, new, &[]),
            None => (self.selected(t, new), Vec::new()),
        };
        let changes = Arc::new(Changes::new(wire, &resources, removed));
        shared.entries.insert(
            key,
            SharedEntry {
                changes: Arc::downgrade(&changes),
                _base: base.map(Arc::downgrade),
                _old: Arc::downgrade(old.name_set()),
                _new: Arc::downgrade(new.name_set()),
            },
        );
        if shared.entries.len() > shared.prune_at {
            shared.entries.retain(|_, e| e.changes.strong_count() > 0);
            shared.prune_at = (shared.entries.len() * 2).max(16);
        }
        changes
    }

    /// The version a proxy with this subscription holds of the type.
    pub(super) fn version(&self, t: TypeUrl, sub: &Subscription) -> String {
        let v = self.versions[t];
        if sub.is_wildcard() {
            format!("{v:016x}")
        } else {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&v.to_le_bytes());
            b[8..].copy_from_slice(&sub.name_set().digest().to_le_bytes());
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b))
        }
    }

    pub(super) fn same_content(&self, other: &Self) -> bool {
        self.versions == other.versions
    }

    /// What changed since `old`, computed once per pair.
    fn diff_from(&self, old: &Arc<Prepared>) -> Arc<Diff> {
        let mut diffs = lock(&self.diffs);
        if let Some((_, d)) = diffs
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(old)) && w.strong_count() > 0)
        {
            return d.clone();
        }
        let d = Arc::new(PerType::from_fn(|t| {
            TypeDiff::between(old.res.of_type(t), self.res.of_type(t))
        }));
        diffs.retain(|(w, _)| w.strong_count() > 0);
        diffs.push((Arc::downgrade(old), d.clone()));
        d
    }

    /// The resources of a type a subscription selects, in name order.
    pub(super) fn selected(&self, t: TypeUrl, sub: &Subscription) -> Vec<&Resource> {
        let Some(all) = self.res.of_type(t) else {
            return Vec::new();
        };
        if sub.is_wildcard() {
            all.values().collect()
        } else if sub.name_count() < all.len() {
            sub.names().filter_map(|n| all.get(n)).collect()
        } else {
            all.values().filter(|r| sub.contains(&r.name)).collect()
        }
    }

    /// What a proxy that holds `base`'s resources of a type, as selected by `old`, lacks
    /// of this config's as selected by `new`: resources to send (with the names in
    /// `force`, sent whatever the proxy holds), and names it holds that are gone.
    pub(super) fn changes_since(
        &self,
        base: &Arc<Prepared>,
        t: TypeUrl,
        old: &Subscription,
        new: &Subscription,
        force: &[String],
    ) -> (Vec<&Resource>, Vec<String>) {
        let Some(all) = self.res.of_type(t) else {
            // Nothing of the type now: everything held is gone.
            let removed = base
                .res
                .of_type(t)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|n| old.contains(n) && new.contains(n))
                .cloned()
                .collect();
            return (Vec::new(), removed);
        };
        let mut send: BTreeMap<&str, &Resource> = BTreeMap::new();
        let mut removed = Vec::new();
        if !std::ptr::eq(self, Arc::as_ptr(base)) {
            let diffs = self.diff_from(base);
            let diff = &diffs[t];
            for n in &diff.changed {
                if new.contains(n)
                    && let Some((k, r)) = all.get_key_value(n)
                {
                    send.insert(k, r);
                }
            }
            removed.extend(
                diff.removed
                    .iter()
                    .filter(|n| old.contains(n) && new.contains(n))
                    .cloned(),
            );
        }
        if !new.same(old) {
            if new.is_wildcard() && !old.is_wildcard() {
                for (k, r) in all {
                    if !old.contains(k) {
                        send.insert(k, r);
                    }
                }
            } else if !new.is_wildcard() {
                for n in new.names() {
                    if !old.contains(n)
                        && let Some((k, r)) = all.get_key_value(n)
                    {
                        send.insert(k, r);
                    }
                }
            }
        }
        for n in force {
            if new.contains(n)
                && let Some((k, r)) = all.get_key_value(n)
            {
                send.insert(k, r);
            }
        }
        (send.into_values().collect(), removed)
    }
}
