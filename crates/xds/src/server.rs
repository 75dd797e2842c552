//! The Aggregated Discovery Service, State-of-the-World and Delta, over one generator.
//!
//! Per connection and type it tracks what was sent (version, nonce), what the proxy
//! accepted (ACK) or rejected (NACK, with Envoy's error), and what it subscribed to.
//! A NACKed response is not sent again: the proxy keeps serving its last accepted
//! config, and the error shows in [`DiscoveryServer::statuses`]. A reconnecting proxy
//! whose versions match what would be sent gets nothing new.
//!
//! Pushes: registry snapshots are debounced ([`PushOptions`]); then one push task
//! generates every connected proxy's config (the generator shares configs between
//! proxies alike) and hands a new config only to the connections whose config changed.
//! What a connection sends is the difference between the config it last sent from and
//! the new one, computed once per pair of shared configs, restricted to what the proxy
//! subscribed to: an endpoint change sends the changed `ClusterLoadAssignment`s to
//! the proxies that watch them, and nothing to the others. Per connection the server
//! keeps references to the shared configs and to subscription name sets shared by
//! every connection that subscribed to the same names, not copies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use http_body::Frame;
use isthmus_registry::Snapshot;
use prost::bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tonic::Status;
use tonic::codegen::http;

use crate::proxy::{Proxy, ProxyError, ProxyKind};
use crate::resources::{self, ByName, ProxyResources, Resource};
use imbl::ordmap::DiffItem;

/// Config generation: a pure function of (registry snapshot, proxy).
pub trait Generator: Send + Sync + 'static {
    /// Shared: proxies with the same view of the mesh may receive the same config.
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources>;
}

/// The default quiet period before a push.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(10);
/// The default longest delay of a push under a stream of changes.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);

/// How registry changes are gathered into pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushOptions {
    /// A push starts once the registry has been quiet this long…
    pub debounce: Duration,
    /// …or this long after the first change it carries, whichever comes first.
    pub max_delay: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

/// A set of resource names, shared by every subscription to the same names.
#[derive(Debug, Default, PartialEq, Eq)]
struct NameSet {
    names: BTreeSet<String>,
    /// Order-independent: the wrapping sum of the names' hashes.
    hash: u64,
}

fn name_hash(n: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(n)
}

/// What a proxy subscribed to of one type: everything (wildcard), names, or (Delta)
/// both. Shown in the debug API as a list, `"*"` first for a wildcard.
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    wildcard: bool,
    names: Arc<NameSet>,
}

impl Subscription {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The names subscribed to explicitly.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.names.iter().map(String::as_str)
    }

    fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.names.contains(name)
    }

    fn same(&self, other: &Self) -> bool {
        self.wildcard == other.wildcard && Arc::ptr_eq(&self.names, &other.names)
    }

    /// What tells the selected names apart: the shared name set, unless the names
    /// make no difference (a wildcard, or none).
    fn identity(&self) -> usize {
        if self.wildcard || self.names.names.is_empty() {
            0
        } else {
            Arc::as_ptr(&self.names) as usize
        }
    }

    fn with_wildcard(&self, wildcard: bool) -> Self {
        Self {
            wildcard,
            names: self.names.clone(),
        }
    }
}

impl Serialize for Subscription {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.wildcard.then_some("*").into_iter().chain(self.names()))
    }
}

/// Subscription name sets by hash; connections with the same names share one set.
#[derive(Default)]
struct Interner {
    sets: HashMap<u64, Vec<Weak<NameSet>>>,
    prune_at: usize,
}

impl Interner {
    fn find(&mut self, hash: u64, len: usize) -> Option<Arc<NameSet>> {
        self.sets
            .get(&hash)?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.names.len() == len)
    }

    fn intern(&mut self, names: BTreeSet<String>) -> Arc<NameSet> {
        let hash = names
            .iter()
            .fold(0u64, |h, n| h.wrapping_add(name_hash(n.as_bytes())));
        let slot = self.sets.entry(hash).or_default();
        slot.retain(|w| w.strong_count() > 0);
        if let Some(s) = slot
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.names == names)
        {
            return s;
        }
        let set = Arc::new(NameSet { names, hash });
        slot.push(Arc::downgrade(&set));
        if self.sets.len() > self.prune_at {
            self.sets.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            self.prune_at = (self.sets.len() * 2).max(64);
        }
        set
    }
}

/// The index of a type URL in [`resources::TYPES`].
fn type_index(type_url: &str) -> Option<usize> {
    resources::TYPES.iter().position(|t| *t == type_url)
}

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

type Diff = [TypeDiff; resources::TYPES.len()];

/// A generated config as the server pushes it: the version of each type's resources,
/// and its differences from the configs it replaced, each computed once and shared by
/// every connection holding the config.
struct Prepared {
    res: Arc<ProxyResources>,
    versions: [u64; resources::TYPES.len()],
    diffs: Mutex<Vec<(Weak<Prepared>, Arc<Diff>)>>,
    /// Changes being sent from this config, shared by the connections that send the
    /// same ones at the same time (a push, a mesh of proxies connecting).
    shared: Mutex<SharedChanges>,
}

/// Which response message a [`Changes`] is encoded for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Wire {
    Sotw,
    Delta,
}

/// What one response carries of a type, encoded: the run of resource fields (field 2
/// of `DiscoveryResponse` or `DeltaDiscoveryResponse`) and, for Delta, the removed
/// names. A connection frames it with its own version and nonce; the encoded
/// resources themselves are one buffer however many connections send them.
#[derive(Debug, Default)]
struct Changes {
    wire: Vec<u8>,
    /// Resources in `wire`, and their encoded size.
    count: usize,
    bytes: usize,
    removed: Vec<String>,
}

impl Changes {
    fn new(wire_kind: Wire, resources: &[&Resource], removed: Vec<String>) -> Self {
        let len: usize = resources
            .iter()
            .map(|r| match wire_kind {
                Wire::Sotw => field_len(any_len(r)),
                Wire::Delta => field_len(delta_resource_len(r)),
            })
            .sum();
        let mut wire = Vec::with_capacity(len);
        for r in resources {
            match wire_kind {
                Wire::Sotw => {
                    put_field_header(2, any_len(r), &mut wire);
                    put_any(r, &mut wire);
                }
                Wire::Delta => {
                    put_field_header(2, delta_resource_len(r), &mut wire);
                    put_str(1, &r.version, &mut wire);
                    put_field_header(2, any_len(r), &mut wire);
                    put_any(r, &mut wire);
                    put_str(3, &r.name, &mut wire);
                }
            }
        }
        debug_assert_eq!(wire.len(), len);
        Self {
            wire,
            count: resources.len(),
            bytes: resources.iter().map(|r| r.any.value.len()).sum(),
            removed,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0 && self.removed.is_empty()
    }
}

/// The encoded resources of shared [`Changes`], as the body of a response frame: alive
/// while any connection's response that carries them is queued or being written.
struct SharedWire(Arc<Changes>);

impl AsRef<[u8]> for SharedWire {
    fn as_ref(&self) -> &[u8] {
        &self.0.wire
    }
}

/// What identifies shared changes: the wire format, the type, the config the proxy
/// holds (none: everything selected is sent), and the subscription before and after,
/// by the addresses of the shared objects (kept alive by the entry's weak references).
type ChangeKey = (Wire, usize, usize, bool, usize, bool, usize);

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
    fn new(res: Arc<ProxyResources>) -> Self {
        Self {
            versions: resources::TYPES.map(|t| type_version(res.of(t))),
            res,
            diffs: Mutex::new(Vec::new()),
            shared: Mutex::default(),
        }
    }

    /// The changes a proxy that holds `base`'s resources of a type (none: nothing
    /// yet), as selected by `old`, is sent to hold this config's as selected by `new`.
    /// Computed and encoded once for every connection that needs the same ones while
    /// an earlier response with them is still on its way.
    fn changes(
        &self,
        wire: Wire,
        base: Option<&Arc<Prepared>>,
        type_url: &str,
        old: &Subscription,
        new: &Subscription,
    ) -> Arc<Changes> {
        // Without a base the old subscription plays no part.
        let old = if base.is_some() { old } else { new };
        let key: ChangeKey = (
            wire,
            type_index(type_url).unwrap_or(usize::MAX),
            base.map_or(0, |b| Arc::as_ptr(b) as usize),
            old.wildcard,
            old.identity(),
            new.wildcard,
            new.identity(),
        );
        let mut shared = lock(&self.shared);
        if let Some(c) = shared.entries.get(&key).and_then(|e| e.changes.upgrade()) {
            return c;
        }
        let (resources, removed) = match base {
            Some(base) => self.changes_since(base, type_url, old, new, &[]),
            None => (self.selected(type_url, new), Vec::new()),
        };
        let changes = Arc::new(Changes::new(wire, &resources, removed));
        shared.entries.insert(
            key,
            SharedEntry {
                changes: Arc::downgrade(&changes),
                _base: base.map(Arc::downgrade),
                _old: Arc::downgrade(&old.names),
                _new: Arc::downgrade(&new.names),
            },
        );
        if shared.entries.len() > shared.prune_at {
            shared.entries.retain(|_, e| e.changes.strong_count() > 0);
            shared.prune_at = (shared.entries.len() * 2).max(16);
        }
        changes
    }

    /// The version a proxy with this subscription holds of the type.
    fn version(&self, type_url: &str, sub: &Subscription) -> String {
        let v = type_index(type_url).map_or_else(|| type_version(None), |i| self.versions[i]);
        if sub.wildcard {
            format!("{v:016x}")
        } else {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&v.to_le_bytes());
            b[8..].copy_from_slice(&sub.names.hash.to_le_bytes());
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b))
        }
    }

    fn same_content(&self, other: &Self) -> bool {
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
        let d =
            Arc::new(resources::TYPES.map(|t| TypeDiff::between(old.res.of(t), self.res.of(t))));
        diffs.retain(|(w, _)| w.strong_count() > 0);
        diffs.push((Arc::downgrade(old), d.clone()));
        d
    }

    /// The resources of a type a subscription selects, in name order.
    fn selected(&self, type_url: &str, sub: &Subscription) -> Vec<&Resource> {
        let Some(all) = self.res.of(type_url) else {
            return Vec::new();
        };
        if sub.wildcard {
            all.values().collect()
        } else if sub.names.names.len() < all.len() {
            sub.names().filter_map(|n| all.get(n)).collect()
        } else {
            all.values().filter(|r| sub.contains(&r.name)).collect()
        }
    }

    /// What a proxy that holds `base`'s resources of a type, as selected by `old`, lacks
    /// of this config's as selected by `new`: resources to send (with the names in
    /// `force`, sent whatever the proxy holds), and names it holds that are gone.
    fn changes_since(
        &self,
        base: &Arc<Prepared>,
        type_url: &str,
        old: &Subscription,
        new: &Subscription,
        force: &[String],
    ) -> (Vec<&Resource>, Vec<String>) {
        let Some(all) = self.res.of(type_url) else {
            // Nothing of the type now: everything held is gone.
            let removed = base
                .res
                .of(type_url)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|n| old.contains(n) && new.contains(n))
                .cloned()
                .collect();
            return (Vec::new(), removed);
        };
        let mut send: BTreeMap<&str, &Resource> = BTreeMap::new();
        let mut removed = Vec::new();
        if !std::ptr::eq(self, Arc::as_ptr(base))
            && let Some(i) = type_index(type_url)
        {
            let diff = self.diff_from(base);
            for n in &diff[i].changed {
                if new.contains(n)
                    && let Some((k, r)) = all.get_key_value(n)
                {
                    send.insert(k, r);
                }
            }
            removed.extend(
                diff[i]
                    .removed
                    .iter()
                    .filter(|n| old.contains(n) && new.contains(n))
                    .cloned(),
            );
        }
        if !new.same(old) {
            if new.wildcard && !old.wildcard {
                for (k, r) in all {
                    if !old.contains(k) {
                        send.insert(k, r);
                    }
                }
            } else if !new.wildcard {
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

/// What one proxy has of one type, for the debug API.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// Resource names subscribed to; `"*"` for a wildcard subscription.
    pub subscribed: Subscription,
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    /// Envoy's error for the last rejected response, until a later one is accepted.
    pub nack: Option<String>,
    /// Resources in the last response.
    pub resources: usize,
    pub pushes: u64,
}

/// One connected proxy, for the debug API (`/debug/syncz`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    pub connection: u64,
    pub protocol: &'static str,
    pub proxy: Option<Proxy>,
    pub connected_at: SystemTime,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// A new config for one connection, from a push.
struct Update {
    config: Arc<Prepared>,
    snapshot_version: u64,
    round: Arc<Round>,
}

/// Where the push task leaves a connection's next config: only the latest is kept.
#[derive(Default)]
struct Mailbox {
    update: Mutex<Option<Update>>,
    notify: Notify,
}

/// An identified connection, as the push task sees it.
struct Handle {
    proxy: Arc<Proxy>,
    /// The config last handed to the connection, and the snapshot version it is of.
    assigned: Option<(Arc<Prepared>, u64)>,
    mailbox: Arc<Mailbox>,
}

struct Inner {
    snapshots: watch::Receiver<Snapshot>,
    generator: Arc<dyn Generator>,
    options: PushOptions,
    /// Each connection's status has a lock of its own: connections update theirs on
    /// every response and ACK without waiting for each other.
    connections: Mutex<BTreeMap<u64, Arc<Mutex<ConnectionStatus>>>>,
    proxies: Mutex<HashMap<u64, Handle>>,
    /// Prepared configs by the address of their generated resources.
    configs: Mutex<(HashMap<usize, Weak<Prepared>>, usize)>,
    names: Mutex<Interner>,
    empty: Arc<Prepared>,
    next_connection: AtomicU64,
    next_round: AtomicU64,
    pushing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// The prepared form of a generated config: once per distinct config.
    fn prepare(&self, res: Arc<ProxyResources>) -> Arc<Prepared> {
        let key = Arc::as_ptr(&res) as usize;
        if let Some(p) = lock(&self.configs).0.get(&key).and_then(Weak::upgrade)
            && Arc::ptr_eq(&p.res, &res)
        {
            return p;
        }
        let p = Arc::new(Prepared::new(res));
        let mut configs = lock(&self.configs);
        let (map, prune_at) = &mut *configs;
        if let Some(q) = map.get(&key).and_then(Weak::upgrade)
            && Arc::ptr_eq(&q.res, &p.res)
        {
            return q;
        }
        map.insert(key, Arc::downgrade(&p));
        if map.len() > *prune_at {
            map.retain(|_, w| w.strong_count() > 0);
            *prune_at = (map.len() * 2).max(64);
        }
        p
    }

    /// A subscription to the names of a request (`*` excluded), shared with every
    /// other subscription to the same names; `current` is kept if the names are its own.
    fn subscription<'a>(
        &self,
        wildcard: bool,
        names: impl Iterator<Item = &'a [u8]> + Clone,
        current: &Subscription,
    ) -> Subscription {
        let (mut hash, mut len) = (0u64, 0usize);
        for n in names.clone() {
            hash = hash.wrapping_add(name_hash(n));
            len += 1;
        }
        if current.names.hash == hash && current.names.names.len() == len {
            return current.with_wildcard(wildcard);
        }
        let mut interner = lock(&self.names);
        let set = match interner.find(hash, len) {
            // Without duplicates in the request, equal hashes and sizes: the same names.
            Some(s)
                if names
                    .clone()
                    .all(|n| std::str::from_utf8(n).is_ok_and(|n| s.names.contains(n))) =>
            {
                s
            }
            _ => interner.intern(
                names
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect(),
            ),
        };
        Subscription {
            wildcard,
            names: set,
        }
    }

    /// Generates one proxy's config. Inline: proxies alike share a generated config, so
    /// most calls are cache lookups; a blocking-pool thread per connecting proxy would
    /// cost far more (threads, their allocator caches) than the occasional generation
    /// it moves off the runtime's workers.
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<Prepared> {
        self.prepare(self.generator.generate(snapshot, proxy))
    }

    /// Starts the push task (once, from inside the runtime).
    fn start_pushing(self: &Arc<Self>) {
        if self.pushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut rx = self.snapshots.clone();
        let last = rx.borrow_and_update().clone();
        tokio::spawn(push_loop(Arc::downgrade(self), rx, last, self.options));
    }
}

/// Waits for registry changes, gathers them (debounce), and pushes.
async fn push_loop(
    inner: Weak<Inner>,
    mut rx: watch::Receiver<Snapshot>,
    mut last: Snapshot,
    opts: PushOptions,
) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let first = Instant::now();
        let mut changes = 1u32;
        loop {
            let deadline = (Instant::now() + opts.debounce).min(first + opts.max_delay);
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    changes += 1;
                }
                () = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        let snap = rx.borrow_and_update().clone();
        let Some(inner) = inner.upgrade() else { return };
        let why = describe(&last, &snap, changes);
        push_round(&inner, snap.clone(), why, first).await;
        last = snap;
    }
}

/// How many objects differ between two versions of a map.
fn changed_objects<K: Ord + Clone, V>(
    a: &imbl::OrdMap<K, Arc<V>>,
    b: &imbl::OrdMap<K, Arc<V>>,
) -> usize {
    if a.ptr_eq(b) {
        return 0;
    }
    b.iter()
        .filter(|(k, v)| !a.get(*k).is_some_and(|o| Arc::ptr_eq(o, v)))
        .count()
        + a.keys().filter(|k| !b.contains_key(*k)).count()
}

/// What changed between two snapshots, for the push log.
fn describe(old: &Snapshot, new: &Snapshot, changes: u32) -> String {
    let mut services: Vec<&str> = new
        .services
        .iter()
        .filter(|(h, s)| !old.services.get(*h).is_some_and(|o| Arc::ptr_eq(o, s)))
        .map(|(h, _)| h.as_str())
        .collect();
    services.extend(
        old.services
            .keys()
            .filter(|h| !new.services.contains_key(*h))
            .map(|h| h.as_str()),
    );
    services.sort_unstable();
    let mut out = format!(
        "snapshot {}→{} ({changes} change{})",
        old.version,
        new.version,
        if changes == 1 { "" } else { "s" }
    );
    if !services.is_empty() {
        let _ = write!(
            out,
            ", services {}",
            services[..services.len().min(3)].join(" ")
        );
        if services.len() > 3 {
            let _ = write!(out, " (+{} more)", services.len() - 3);
        }
    }
    let config = changed_objects(&old.config, &new.config);
    if config > 0 {
        let _ = write!(out, ", {config} Istio config object(s)");
    }
    let secrets = changed_objects(&old.secrets, &new.secrets);
    if secrets > 0 {
        let _ = write!(out, ", {secrets} secret(s)");
    }
    if !Arc::ptr_eq(&old.gateways, &new.gateways) {
        out.push_str(", gateways");
    }
    if old.sync != new.sync {
        out.push_str(", cluster sync state");
    }
    out
}

/// One push: what it carried and what it sent, logged when every connection it reached
/// is done with it.
struct Round {
    id: u64,
    why: String,
    since: Instant,
    /// When generation started (after the debounce).
    started: Instant,
    /// Until the first response of the push was handed to its stream, in nanoseconds
    /// since `started` (0: none yet).
    first_sent: AtomicU64,
    proxies: usize,
    /// Time spent generating, summed over threads, in nanoseconds.
    generation: AtomicU64,
    /// Until every new config was handed to its connection, in nanoseconds.
    handed_over: AtomicU64,
    new_config: AtomicU64,
    /// The distinct new configs, by address.
    distinct: Mutex<BTreeSet<usize>>,
    sent_to: AtomicU64,
    superseded: AtomicU64,
    responses: [AtomicU64; resources::TYPES.len()],
    resources: AtomicU64,
    removed: AtomicU64,
    bytes: AtomicU64,
}

impl Round {
    fn record(&self, type_url: &str, resources: usize, removed: usize, bytes: usize) {
        if let Some(i) = type_index(type_url) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
        self.resources
            .fetch_add(resources as u64, Ordering::Relaxed);
        self.removed.fetch_add(removed as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        let mut sent = String::new();
        for (t, n) in resources::TYPES.iter().zip(&self.responses) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = write!(
                    sent,
                    "{}{} {n}",
                    if sent.is_empty() { "" } else { ", " },
                    resources::short(t)
                );
            }
        }
        if sent.is_empty() {
            sent.push_str("nothing");
        }
        tracing::info!(
            push = self.id,
            proxies = self.proxies,
            new_config = self.new_config.load(Ordering::Relaxed),
            distinct_configs = lock(&self.distinct).len(),
            sent_to = self.sent_to.load(Ordering::Relaxed),
            superseded = self.superseded.load(Ordering::Relaxed),
            resources = self.resources.load(Ordering::Relaxed),
            removed = self.removed.load(Ordering::Relaxed),
            bytes = self.bytes.load(Ordering::Relaxed),
            debounce_ms = (self.started - self.since).as_secs_f64() * 1e3,
            first_sent_ms = self.first_sent.load(Ordering::Relaxed) as f64 / 1e6,
            generation_ms = self.generation.load(Ordering::Relaxed) as f64 / 1e6,
            handed_over_ms = self.handed_over.load(Ordering::Relaxed) as f64 / 1e6,
            total_ms = self.since.elapsed().as_secs_f64() * 1e3,
            "push: {}; responses: {sent}",
            self.why
        );
    }
}

/// A connection to push to, and its proxy.
type Target = (u64, Arc<Proxy>);

/// Generates every connected proxy's config from `snap` and hands the changed ones to
/// their connections. Proxies alike (kind, namespace, cluster) mostly share one config:
/// they are generated together, groups in parallel (one thread per core), and each
/// group's configs go out as soon as they are generated.
async fn push_round(inner: &Arc<Inner>, snap: Snapshot, why: String, since: Instant) {
    let id = inner.next_round.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    let mut groups: HashMap<(ProxyKind, String, String), Vec<Target>> = HashMap::new();
    for (conn, h) in lock(&inner.proxies).iter() {
        let p = &h.proxy;
        groups
            .entry((p.kind, p.namespace.clone(), p.cluster.to_string()))
            .or_default()
            .push((*conn, p.clone()));
    }
    if groups.is_empty() {
        tracing::debug!(push = id, "push: {why}; no proxy connected");
        return;
    }
    let round = Arc::new(Round {
        id,
        why,
        since,
        started,
        first_sent: AtomicU64::new(0),
        proxies: groups.values().map(Vec::len).sum(),
        generation: AtomicU64::new(0),
        handed_over: AtomicU64::new(0),
        new_config: AtomicU64::new(0),
        distinct: Mutex::new(BTreeSet::new()),
        sent_to: AtomicU64::new(0),
        superseded: AtomicU64::new(0),
        responses: Default::default(),
        resources: AtomicU64::new(0),
        removed: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(groups.len());
    let queue = Arc::new(Mutex::new(groups.into_values().collect::<Vec<_>>()));
    let snap = Arc::new(snap);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (inner, queue, snap, round) =
                (inner.clone(), queue.clone(), snap.clone(), round.clone());
            tokio::task::spawn_blocking(move || {
                loop {
                    let group = lock(&queue).pop();
                    let Some(group) = group else { break };
                    let t = Instant::now();
                    let configs: Vec<_> = group
                        .into_iter()
                        .map(|(conn, p)| (conn, inner.prepare(inner.generator.generate(&snap, &p))))
                        .collect();
                    round
                        .generation
                        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    deliver(&inner, configs, snap.version, &round);
                }
            })
        })
        .collect();
    for w in workers {
        if let Err(e) = w.await {
            tracing::error!(push = id, error = %e, "config generation failed; some proxies keep their config");
        }
    }
    round
        .handed_over
        .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Hands new configs to their connections, unless unchanged.
fn deliver(inner: &Inner, configs: Vec<(u64, Arc<Prepared>)>, version: u64, round: &Arc<Round>) {
    let mut mailboxes = Vec::new();
    {
        let mut proxies = lock(&inner.proxies);
        for (conn, config) in configs {
            let Some(h) = proxies.get_mut(&conn) else {
                continue;
            };
            let unchanged = h.assigned.as_ref().is_some_and(|(a, v)| {
                *v > version || Arc::ptr_eq(a, &config) || a.same_content(&config)
            });
            if unchanged {
                tracing::trace!(push = round.id, proxy = %h.proxy.id, "config unchanged");
                continue;
            }
            lock(&round.distinct).insert(Arc::as_ptr(&config) as usize);
            h.assigned = Some((config.clone(), version));
            tracing::debug!(push = round.id, proxy = %h.proxy.id, "new config");
            mailboxes.push((h.mailbox.clone(), config));
        }
    }
    round
        .new_config
        .fetch_add(mailboxes.len() as u64, Ordering::Relaxed);
    for (mailbox, config) in mailboxes {
        let old = lock(&mailbox.update).replace(Update {
            config,
            snapshot_version: version,
            round: round.clone(),
        });
        if let Some(old) = old {
            old.round.superseded.fetch_add(1, Ordering::Relaxed);
        }
        mailbox.notify.notify_one();
    }
}

/// The ADS server.
#[derive(Clone)]
pub struct DiscoveryServer {
    inner: Arc<Inner>,
}

impl DiscoveryServer {
    pub fn new(snapshots: watch::Receiver<Snapshot>, generator: Arc<dyn Generator>) -> Self {
        Self::with_options(snapshots, generator, PushOptions::default())
    }

    pub fn with_options(
        snapshots: watch::Receiver<Snapshot>,
        generator: Arc<dyn Generator>,
        options: PushOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                snapshots,
                generator,
                options,
                connections: Mutex::new(BTreeMap::new()),
                proxies: Mutex::new(HashMap::new()),
                configs: Mutex::new((HashMap::new(), 64)),
                names: Mutex::new(Interner::default()),
                empty: Arc::new(Prepared::new(Arc::default())),
                next_connection: AtomicU64::new(1),
                next_round: AtomicU64::new(0),
                pushing: AtomicBool::new(false),
            }),
        }
    }

    /// The gRPC service to mount on a tonic server.
    pub fn service(&self) -> AdsService {
        AdsService {
            inner: self.inner.clone(),
        }
    }

    /// Every connected proxy and its per-type sync state.
    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        let all: Vec<_> = lock(&self.inner.connections).values().cloned().collect();
        all.iter().map(|c| lock(c).clone()).collect()
    }

    /// The config one proxy receives now (by node id), generated from the current snapshot.
    pub fn config_for(&self, proxy_id: &str) -> Option<(Proxy, Arc<ProxyResources>)> {
        let all: Vec<_> = lock(&self.inner.connections).values().cloned().collect();
        let proxy = all
            .iter()
            .find_map(|c| lock(c).proxy.clone().filter(|p| p.id == proxy_id))?;
        let snap = self.inner.snapshots.borrow().clone();
        let res = self.inner.generator.generate(&snap, &proxy);
        Some((proxy, res))
    }
}

/// Registers a connection for the debug API and the push task; unregisters when
/// dropped.
struct Registration {
    inner: Arc<Inner>,
    id: u64,
    status: Arc<Mutex<ConnectionStatus>>,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    fn new(inner: &Arc<Inner>, protocol: &'static str) -> Self {
        let id = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let status = Arc::new(Mutex::new(ConnectionStatus {
            connection: id,
            protocol,
            proxy: None,
            connected_at: SystemTime::now(),
            types: BTreeMap::new(),
        }));
        lock(&inner.connections).insert(id, status.clone());
        Self {
            inner: inner.clone(),
            id,
            status,
            mailbox: Arc::default(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        f(&mut lock(&self.status));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.connections).remove(&self.id);
        lock(&self.inner.proxies).remove(&self.id);
    }
}

/// What both protocol variants keep of a connection: the proxy, its current config,
/// and the way back to it.
struct Conn {
    inner: Arc<Inner>,
    tx: Responses,
    proxy: Option<Arc<Proxy>>,
    current: Arc<Prepared>,
    /// The snapshot version `current` was generated from.
    current_version: Option<u64>,
    nonce: u64,
}

impl Conn {
    fn new(inner: &Arc<Inner>, tx: Responses) -> Self {
        Self {
            inner: inner.clone(),
            tx,
            proxy: None,
            current: inner.empty.clone(),
            current_version: None,
            nonce: 0,
        }
    }

    fn proxy_id(&self) -> &str {
        self.proxy.as_ref().map_or("", |p| p.id.as_str())
    }

    /// Takes a config unless it is older than the one held.
    fn adopt(&mut self, config: Arc<Prepared>, snapshot_version: u64) -> bool {
        if self.current_version.is_some_and(|v| snapshot_version < v) {
            return false;
        }
        self.current = config;
        self.current_version = Some(snapshot_version);
        true
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// Learns who the proxy is from the first request's node, and generates its config.
    async fn identify(
        &mut self,
        reg: &Registration,
        node: Option<&Node>,
        protocol: &str,
    ) -> Result<(), Status> {
        if self.proxy.is_some() {
            return Ok(());
        }
        let node = node.ok_or_else(|| Status::invalid_argument(ProxyError::NoNode.to_string()))?;
        let proxy = Proxy::from_node(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(proxy = %proxy.id, cluster = %proxy.cluster, network = %proxy.network, protocol, "proxy connected");
        reg.update(|c| c.proxy = Some(proxy.clone()));
        let proxy = Arc::new(proxy);
        // Registered before the snapshot is read: any later snapshot reaches it by a push.
        lock(&self.inner.proxies).insert(
            reg.id,
            Handle {
                proxy: proxy.clone(),
                assigned: None,
                mailbox: reg.mailbox.clone(),
            },
        );
        let snap = self.inner.snapshots.borrow().clone();
        let version = snap.version;
        let config = self.inner.generate(&snap, &proxy);
        self.proxy = Some(proxy);
        if self.adopt(config.clone(), version)
            && let Some(h) = lock(&self.inner.proxies).get_mut(&reg.id)
            && h.assigned.as_ref().is_none_or(|(_, v)| *v < version)
        {
            h.assigned = Some((config, version));
        }
        Ok(())
    }
}

/// What differs between State-of-the-World and Delta.
trait Protocol: Send + 'static {
    type Request: WireMessage + Send + 'static;
    const NAME: &'static str;
    fn new(conn: Conn) -> Self;
    fn conn(&mut self) -> &mut Conn;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn subscribed(&self, type_url: &str) -> bool;
    /// Handles a request from an identified proxy.
    fn on_request(
        &mut self,
        reg: &Registration,
        req: Self::Request,
    ) -> impl Future<Output = ()> + Send;
    /// Sends what changed of one type after the config changed; whether it sent.
    fn push(
        &mut self,
        reg: &Registration,
        type_url: &'static str,
        round: &Round,
    ) -> impl Future<Output = bool> + Send;
}

/// One stream: requests from the proxy and pushed configs, until the stream ends.
async fn drive<P: Protocol>(mut p: P, mut inbound: Requests<P::Request>) {
    let inner = p.conn().inner.clone();
    let reg = Registration::new(&inner, P::NAME);
    let mailbox = reg.mailbox.clone();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let identified = p.conn().identify(&reg, P::node(&req), P::NAME).await;
                    if let Err(e) = identified {
                        let _ = p.conn().tx.send(Err(e)).await;
                        return;
                    }
                    p.on_request(&reg, req).await;
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(connection = reg.id, error = %e, "stream ended");
                    return;
                }
            },
            () = mailbox.notify.notified() => {
                let update = lock(&mailbox.update).take();
                if let Some(u) = update
                    && p.conn().adopt(u.config, u.snapshot_version)
                {
                    let mut sent = false;
                    for t in resources::TYPES {
                        if p.subscribed(t) {
                            sent |= p.push(&reg, t, &u.round).await;
                        }
                    }
                    if sent {
                        u.round.sent_to.fetch_add(1, Ordering::Relaxed);
                        let at = u.round.started.elapsed().as_nanos().max(1) as u64;
                        let _ = u.round.first_sent.compare_exchange(
                            0,
                            at,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
            }
        }
    }
}

fn status_of(reg: &Registration, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
    reg.update(|c| f(c.types.entry(resources::short(type_url)).or_default()));
}

fn nack_message(detail: &Option<envoy_types::pb::google::rpc::Status>) -> Option<String> {
    detail.as_ref().map(|s| {
        if s.message.is_empty() {
            format!("rejected (code {})", s.code)
        } else {
            s.message.clone()
        }
    })
}

/// Why a response is sent, for the log.
#[derive(Clone, Copy)]
enum Reason<'a> {
    Asked,
    SubscriptionChanged,
    Push(&'a Round),
}

impl Reason<'_> {
    fn as_str(&self) -> &'static str {
        match self {
            Reason::Asked => "proxy asked",
            Reason::SubscriptionChanged => "subscription changed",
            Reason::Push(_) => "config changed",
        }
    }

    fn round(&self) -> Option<&Round> {
        match self {
            Reason::Push(r) => Some(r),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------
// State of the World

#[derive(Default)]
struct SotwType {
    sub: Subscription,
    /// The config the proxy's resources of the type were last sent from (under `sub`);
    /// none before the first response.
    base: Option<Arc<Prepared>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    /// The digest of the names in the request `sub` was read from.
    names_digest: Option<u64>,
}

struct Sotw {
    conn: Conn,
    types: HashMap<String, SotwType>,
}

impl Protocol for Sotw {
    type Request = SotwRequest;
    const NAME: &'static str = "sotw";

    fn new(conn: Conn) -> Self {
        Self {
            conn,
            types: HashMap::new(),
        }
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn subscribed(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }

    async fn on_request(&mut self, reg: &Registration, req: SotwRequest) {
        self.request(reg, req).await;
    }

    async fn push(&mut self, reg: &Registration, type_url: &'static str, round: &Round) -> bool {
        let sub = match self.types.get(type_url) {
            Some(t) => t.sub.clone(),
            None => return false,
        };
        self.respond(reg, type_url, sub, Reason::Push(round)).await
    }
}

impl Sotw {
    async fn request(&mut self, reg: &Registration, req: SotwRequest) {
        let type_url = req.type_url.as_str();
        let state = self.types.entry(type_url.to_string()).or_default();
        if !req.response_nonce.is_empty() {
            if state.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                // A reply to an older response: the newer one is on its way.
                return;
            }
            if let Some(err) = nack_message(&req.error_detail) {
                tracing::warn!(proxy = self.conn.proxy_id(), r#type = resources::short(type_url), version = ?state.sent_version, error = %err, "proxy rejected config (NACK); it keeps its last accepted config");
                status_of(reg, type_url, |s| s.nack = Some(err));
                return;
            }
            status_of(reg, type_url, |s| {
                s.acked_version = Some(req.version_info.clone());
                s.nack = None;
            });
        }
        let names = req.names().filter(|n| *n != b"*");
        let wildcard =
            req.star || (req.names_count == 0 && resources::wildcard_by_default(type_url));
        // Envoy repeats the same names in every ACK: the same bytes, the same subscription.
        let sub = match req.names_digest {
            Some(d) if state.names_digest == Some(d) => state.sub.with_wildcard(wildcard),
            _ => self.conn.inner.subscription(wildcard, names, &state.sub),
        };
        state.names_digest = req.names_digest;
        let first = state.sent_nonce.is_none();
        if first && !req.version_info.is_empty() {
            // A reconnect: if the proxy already has what would be sent, send nothing.
            let version = self.conn.current.version(type_url, &sub);
            if version == req.version_info {
                state.sent_version = Some(version.clone());
                state.base = Some(self.conn.current.clone());
                state.sub = sub.clone();
                tracing::debug!(proxy = self.conn.proxy_id(), r#type = resources::short(type_url), %version, "proxy reconnected with the current version; nothing to send");
                status_of(reg, type_url, |s| {
                    s.sent_version = Some(version.clone());
                    s.acked_version = Some(version);
                    s.subscribed = sub;
                });
                return;
            }
        }
        if !first
            && state.sub.same(&sub)
            && state
                .base
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, &self.conn.current))
        {
            // An ACK of the current state.
            return;
        }
        let reason = if first {
            Reason::Asked
        } else {
            Reason::SubscriptionChanged
        };
        self.respond(reg, type_url, sub, reason).await;
    }

    /// Sends what the proxy lacks of a type under subscription `sub`: for clusters and
    /// listeners every selected resource, for the others only the changed and newly
    /// subscribed ones (Envoy keeps those a response omits). Sends nothing if nothing
    /// changed; on a push, also nothing if no subscribed resource changed.
    async fn respond(
        &mut self,
        reg: &Registration,
        type_url: &str,
        sub: Subscription,
        reason: Reason<'_>,
    ) -> bool {
        let cur = self.conn.current.clone();
        let Some(state) = self.types.get_mut(type_url) else {
            return false;
        };
        let version = cur.version(type_url, &sub);
        if state.sent_version.as_deref() == Some(version.as_str()) {
            // Sent already, or resumed on reconnect with this version.
            state.base = Some(cur);
            state.sub = sub;
            return false;
        }
        // Clusters and listeners are sent whole; of the others, what changed.
        let full = resources::wildcard_by_default(type_url);
        let base = state.base.as_ref().filter(|_| !full);
        let changes = cur.changes(Wire::Sotw, base, type_url, &state.sub, &sub);
        if changes.is_empty() && !full && matches!(reason, Reason::Push(_)) {
            // Nothing the proxy subscribed to changed.
            state.base = Some(cur.clone());
            state.sub = sub;
            return false;
        }
        let nonce = self.conn.next_nonce();
        let (count, bytes) = (changes.count, changes.bytes);
        let response = encode_sotw(&version, &changes, type_url, &nonce);
        state.base = Some(cur.clone());
        state.sub = sub.clone();
        state.sent_version = Some(version.clone());
        state.sent_nonce = Some(nonce.clone());
        tracing::debug!(proxy = self.conn.proxy_id(), r#type = resources::short(type_url), %version, resources = count, bytes, reason = reason.as_str(), "push");
        if let Some(round) = reason.round() {
            round.record(type_url, count, 0, bytes);
        }
        status_of(reg, type_url, |s| {
            s.sent_version = Some(version);
            s.sent_nonce = Some(nonce);
            s.resources = count;
            s.pushes += 1;
            s.subscribed = sub;
        });
        let _ = self.conn.tx.send(Ok(response)).await;
        true
    }
}

// ---------------------------------------------------------------------------------
// Delta

#[derive(Default)]
struct DeltaType {
    sub: Subscription,
    /// The config the proxy's resources of the type were last sent from (under `sub`);
    /// none before the first response.
    base: Option<Arc<Prepared>>,
    /// What a reconnecting proxy said it has, until the first response.
    initial: Option<HashMap<String, String>>,
    sent_nonce: Option<String>,
    sent_version: Option<String>,
    started: bool,
}

struct Delta {
    conn: Conn,
    types: HashMap<String, DeltaType>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";

    fn new(conn: Conn) -> Self {
        Self {
            conn,
            types: HashMap::new(),
        }
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn subscribed(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }

    async fn on_request(&mut self, reg: &Registration, req: DeltaDiscoveryRequest) {
        self.request(reg, req).await;
    }

    async fn push(&mut self, reg: &Registration, type_url: &'static str, round: &Round) -> bool {
        let sub = match self.types.get(type_url) {
            Some(t) => t.sub.clone(),
            None => return false,
        };
        self.respond(reg, type_url, sub, &[], false, Reason::Push(round))
            .await
    }
}

impl Delta {
    async fn request(&mut self, reg: &Registration, req: DeltaDiscoveryRequest) {
        let type_url = req.type_url.as_str();
        let state = self.types.entry(type_url.to_string()).or_default();
        if !req.response_nonce.is_empty() {
            if state.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                return;
            }
            if let Some(err) = nack_message(&req.error_detail) {
                tracing::warn!(proxy = self.conn.proxy_id(), r#type = resources::short(type_url), error = %err, "proxy rejected config (NACK); it keeps its last accepted config");
                status_of(reg, type_url, |s| s.nack = Some(err));
                return;
            }
            let version = state.sent_version.clone();
            status_of(reg, type_url, |s| {
                s.acked_version = version;
                s.nack = None;
            });
        }
        let first = !state.started;
        let mut wildcard = state.sub.wildcard;
        if first {
            state.started = true;
            if !req.initial_resource_versions.is_empty() {
                state.initial = Some(req.initial_resource_versions.clone());
            }
            wildcard =
                req.resource_names_subscribe.is_empty() && resources::wildcard_by_default(type_url);
        }
        // A newly subscribed name is sent even if the proxy had it once.
        let mut force = Vec::new();
        let mut names_changed = false;
        for n in &req.resource_names_subscribe {
            if n == "*" {
                wildcard = true;
            } else {
                names_changed = true;
                if !first {
                    force.push(n.clone());
                }
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                wildcard = false;
            } else {
                names_changed = true;
            }
        }
        let sub = if names_changed {
            let mut names = state.sub.names.names.clone();
            for n in req.resource_names_subscribe.iter().filter(|n| *n != "*") {
                names.insert(n.clone());
            }
            for n in req.resource_names_unsubscribe.iter().filter(|n| *n != "*") {
                names.remove(n);
            }
            self.conn
                .inner
                .subscription(wildcard, names.iter().map(|n| n.as_bytes()), &state.sub)
        } else {
            state.sub.with_wildcard(wildcard)
        };
        if !first
            && force.is_empty()
            && state.sub.same(&sub)
            && state
                .base
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, &self.conn.current))
        {
            // An ACK of the current state.
            return;
        }
        let reason = if first {
            Reason::Asked
        } else {
            Reason::SubscriptionChanged
        };
        self.respond(reg, type_url, sub, &force, first, reason)
            .await;
    }

    /// Sends what changed for the type: new or changed resources, and removed names.
    async fn respond(
        &mut self,
        reg: &Registration,
        type_url: &str,
        sub: Subscription,
        force: &[String],
        always: bool,
        reason: Reason<'_>,
    ) -> bool {
        let cur = self.conn.current.clone();
        let Some(state) = self.types.get_mut(type_url) else {
            return false;
        };
        let changes = match (&state.base, state.initial.take()) {
            (Some(base), _) if force.is_empty() => {
                cur.changes(Wire::Delta, Some(base), type_url, &state.sub, &sub)
            }
            (Some(base), _) => {
                let (changed, removed) = cur.changes_since(base, type_url, &state.sub, &sub, force);
                Arc::new(Changes::new(Wire::Delta, &changed, removed))
            }
            (None, Some(initial)) => {
                let wanted = cur.selected(type_url, &sub);
                let names: BTreeSet<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
                let removed = initial
                    .keys()
                    .filter(|n| !names.contains(n.as_str()))
                    .cloned()
                    .collect();
                let changed: Vec<&Resource> = wanted
                    .into_iter()
                    .filter(|r| initial.get(&r.name) != Some(&r.version))
                    .collect();
                Arc::new(Changes::new(Wire::Delta, &changed, removed))
            }
            (None, None) => cur.changes(Wire::Delta, None, type_url, &sub, &sub),
        };
        state.base = Some(cur.clone());
        state.sub = sub.clone();
        if changes.is_empty() && !always {
            return false;
        }
        let nonce = self.conn.next_nonce();
        let version = cur.version(type_url, &sub.with_wildcard(true));
        state.sent_nonce = Some(nonce.clone());
        state.sent_version = Some(version.clone());
        let (count, removed_count, bytes) = (changes.count, changes.removed.len(), changes.bytes);
        let response = encode_delta(&version, &changes, type_url, &nonce);
        tracing::debug!(
            proxy = self.conn.proxy_id(),
            r#type = resources::short(type_url),
            changed = count,
            removed = removed_count,
            bytes,
            reason = reason.as_str(),
            "push"
        );
        if let Some(round) = reason.round() {
            round.record(type_url, count, removed_count, bytes);
        }
        status_of(reg, type_url, |s| {
            s.sent_version = Some(version);
            s.sent_nonce = Some(nonce);
            s.resources = count;
            s.pushes += 1;
            s.subscribed = sub;
        });
        let _ = self.conn.tx.send(Ok(response)).await;
        true
    }
}

// ---------------------------------------------------------------------------------
// gRPC, by hand
//
// tonic's generated server encodes responses through a buffer per stream that keeps
// the capacity of the largest response it ever held (a full CDS response is about a
// megabyte): at 1,000 proxies that alone is a gigabyte. Here the resources a response
// carries are encoded once for every connection that sends the same ones at the same
// time ([`Changes`]: a whole mesh connecting gets each view's clusters encoded once,
// not once per proxy), each connection adds only its own version and nonce around
// them, and the buffers are freed once written; requests are read into a buffer
// released after each message.

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The largest request accepted.
const MAX_REQUEST: usize = 64 << 20;
/// Responses queued per stream before a push waits for the proxy to read.
const QUEUED_RESPONSES: usize = 16;

/// Encoded responses (each a gRPC frame in one or more parts) for one stream, or the
/// status that ends it.
type Responses = mpsc::Sender<Result<Vec<Bytes>, Status>>;

/// The Aggregated Discovery Service, to mount on a tonic server
/// (`Server::builder().add_service(server.service())`).
#[derive(Clone)]
pub struct AdsService {
    inner: Arc<Inner>,
}

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self.open::<Sotw>(req),
            DELTA_PATH => self.open::<Delta>(req),
            other => {
                Status::unimplemented(format!("{other} is not a method of {SERVICE}")).into_http()
            }
        };
        std::future::ready(Ok(response))
    }
}

impl AdsService {
    /// Starts a stream: its task reads requests and pushes, and writes responses.
    fn open<P: Protocol>(
        &self,
        req: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        if let Some(enc) = req.headers().get("grpc-encoding")
            && enc != "identity"
        {
            return Status::unimplemented(format!(
                "compressed requests ({enc:?}) are not supported; send them uncompressed"
            ))
            .into_http();
        }
        self.inner.start_pushing();
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        let p = P::new(Conn::new(&self.inner, tx));
        tokio::spawn(drive(p, Requests::new(req.into_body())));
        let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
            rx,
            parts: Vec::new().into_iter(),
            done: false,
        }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// gRPC messages from a request body.
struct Requests<T: WireMessage> {
    body: tonic::body::Body,
    buf: BytesMut,
    /// What earlier requests of the stream tell about the next ones.
    seen: T::Seen,
    _t: PhantomData<fn() -> T>,
}

impl<T: WireMessage> Requests<T> {
    fn new(body: tonic::body::Body) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            seen: T::Seen::default(),
            _t: PhantomData,
        }
    }

    /// The next message; `None` when the proxy closed its side. Cancel-safe: what was
    /// read stays in the buffer.
    async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if self.buf.len() >= 5 {
                if self.buf[0] != 0 {
                    return Err(Status::unimplemented(
                        "compressed requests are not supported; send them uncompressed",
                    ));
                }
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len > MAX_REQUEST {
                    return Err(Status::resource_exhausted(format!(
                        "a request of {len} bytes; at most {MAX_REQUEST} are accepted"
                    )));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let msg = self.buf.split_to(len).freeze();
                    if self.buf.is_empty() {
                        // Keep no buffer between messages.
                        self.buf = BytesMut::new();
                    }
                    return T::from_wire(msg, &mut self.seen).map(Some).map_err(|e| {
                        Status::invalid_argument(format!("cannot decode the request: {e}"))
                    });
                }
                // Room for the whole message at once.
                self.buf.reserve(5 + len - self.buf.len());
            }
            let frame = std::future::poll_fn(|cx| {
                http_body::Body::poll_frame(Pin::new(&mut self.body), cx)
            })
            .await;
            match frame {
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Status::internal(
                        "the request stream ended inside a message",
                    ));
                }
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A request message, decoded from its bytes.
trait WireMessage: Sized {
    /// What a stream's earlier requests tell about decoding the next.
    type Seen: Default + Send;
    fn from_wire(b: Bytes, seen: &mut Self::Seen) -> Result<Self, String>;
}

impl WireMessage for DeltaDiscoveryRequest {
    type Seen = ();
    fn from_wire(b: Bytes, _: &mut ()) -> Result<Self, String> {
        prost::Message::decode(b).map_err(|e| e.to_string())
    }
}

/// A State-of-the-World request. Envoy repeats every subscribed name in every request
/// (thousands for endpoints, in every ACK): the names stay in the request's bytes,
/// hashed from there, and are copied out only when the subscription changes.
struct SotwRequest {
    raw: Bytes,
    node: Option<Node>,
    version_info: String,
    type_url: String,
    response_nonce: String,
    error_detail: Option<envoy_types::pb::google::rpc::Status>,
    /// How many `resource_names` there are, and whether one is `*`.
    names_count: usize,
    star: bool,
    /// A digest of the names' bytes, when they are one run of fields.
    names_digest: Option<u64>,
}

impl SotwRequest {
    /// `resource_names`, read again from the request's bytes (checked when decoded).
    fn names(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let b = self.raw.as_ref();
        let mut at = 0;
        std::iter::from_fn(move || {
            while at < b.len() {
                let key = read_varint(b, &mut at).ok()?;
                match key & 7 {
                    0 => {
                        read_varint(b, &mut at).ok()?;
                    }
                    1 => at += 8,
                    5 => at += 4,
                    2 => {
                        let len = usize::try_from(read_varint(b, &mut at).ok()?).ok()?;
                        let v = b.get(at..at.checked_add(len)?)?;
                        at += len;
                        if key >> 3 == 3 {
                            return Some(v);
                        }
                    }
                    _ => return None,
                }
            }
            None
        })
    }
}

fn read_varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// A run of resource names a stream sent before: its length in bytes, its digest, how
/// many names it holds and whether one is `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NamesRun {
    len: usize,
    digest: u64,
    count: usize,
    star: bool,
}

/// The last runs of names a stream sent, most recent first, one per type at most.
#[derive(Default)]
struct SeenRuns(Vec<NamesRun>);

impl SeenRuns {
    /// The earlier run that `b[start..]` begins with, if its bytes are the same: an
    /// ACK repeats the names of the request before it, and its thousands of name
    /// fields need not be walked again.
    fn matching(&self, b: &[u8], start: usize) -> Option<NamesRun> {
        self.0.iter().copied().find(|r| {
            let end = start + r.len;
            // The run must end where another field starts.
            end <= b.len()
                && b.get(end) != Some(&NAME_KEY)
                && xxhash_rust::xxh3::xxh3_64(&b[start..end]) == r.digest
        })
    }

    fn remember(&mut self, run: NamesRun) {
        if let Some(i) = self.0.iter().position(|r| *r == run) {
            self.0.remove(i);
        }
        self.0.insert(0, run);
        self.0.truncate(resources::TYPES.len());
    }
}

/// The key of a `resource_names` field (3, length-delimited).
const NAME_KEY: u8 = (3 << 3) | 2;

/// `DiscoveryRequest`: version_info 1, node 2, resource_names 3, type_url 4,
/// response_nonce 5, error_detail 6 (others skipped).
impl WireMessage for SotwRequest {
    type Seen = SeenRuns;
    fn from_wire(raw: Bytes, seen: &mut SeenRuns) -> Result<Self, String> {
        let mut r = SotwRequest {
            raw: Bytes::new(),
            node: None,
            version_info: String::new(),
            type_url: String::new(),
            response_nonce: String::new(),
            error_detail: None,
            names_count: 0,
            star: false,
            names_digest: None,
        };
        // Where the run of name fields starts (key included), and whether it is one run.
        let (mut run_start, mut run_end, mut one_run) = (None, 0, true);
        // The digest of a run known from an earlier request.
        let mut known = None;
        let b = raw.as_ref();
        let string = |s: &[u8]| String::from_utf8(s.to_vec()).map_err(|e| e.to_string());
        let mut at = 0;
        while at < b.len() {
            let field_start = at;
            // The names an earlier request of the stream sent, all at once.
            if run_start.is_none()
                && b[at] == NAME_KEY
                && let Some(run) = seen.matching(b, at)
            {
                r.names_count = run.count;
                r.star = run.star;
                run_start = Some(at);
                run_end = at + run.len;
                known = Some((run_end, run.digest));
                at = run_end;
                continue;
            }
            // The common case first: a resource name shorter than 128 bytes.
            if b[at] == NAME_KEY
                && let Some(&len) = b.get(at + 1)
                && len < 0x80
            {
                let (start, end) = (at + 2, at + 2 + usize::from(len));
                if end > b.len() {
                    return Err("truncated field".into());
                }
                r.names_count += 1;
                r.star |= &b[start..end] == b"*";
                match run_start {
                    None => run_start = Some(field_start),
                    Some(_) if run_end != field_start => one_run = false,
                    Some(_) => {}
                }
                run_end = end;
                at = end;
                continue;
            }
            let key = read_varint(b, &mut at)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    read_varint(b, &mut at)?;
                }
                1 => at += 8,
                5 => at += 4,
                2 => {
                    let len =
                        usize::try_from(read_varint(b, &mut at)?).map_err(|e| e.to_string())?;
                    let end = at
                        .checked_add(len)
                        .filter(|e| *e <= b.len())
                        .ok_or("truncated field")?;
                    let v = &b[at..end];
                    match field {
                        1 => r.version_info = string(v)?,
                        2 => r.node = Some(prost::Message::decode(v).map_err(|e| e.to_string())?),
                        3 => {
                            r.names_count += 1;
                            r.star |= v == b"*";
                            match run_start {
                                None => run_start = Some(field_start),
                                Some(_) if run_end != field_start => one_run = false,
                                Some(_) => {}
                            }
                            run_end = end;
                        }
                        4 => r.type_url = string(v)?,
                        5 => r.response_nonce = string(v)?,
                        6 => {
                            r.error_detail =
                                Some(prost::Message::decode(v).map_err(|e| e.to_string())?);
                        }
                        _ => {}
                    }
                    at = end;
                }
                w => return Err(format!("unexpected wire type {w}")),
            }
        }
        if at > b.len() {
            return Err("truncated field".into());
        }
        r.names_digest = match run_start {
            Some(start) if one_run => {
                let digest = match known {
                    Some((end, digest)) if end == run_end => digest,
                    _ => xxhash_rust::xxh3::xxh3_64(&b[start..run_end]),
                };
                seen.remember(NamesRun {
                    len: run_end - start,
                    digest,
                    count: r.names_count,
                    star: r.star,
                });
                Some(digest)
            }
            _ => None,
        };
        r.raw = raw;
        Ok(r)
    }
}

/// A stream's response body: the frames its task encoded, then the status as trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Result<Vec<Bytes>, Status>>,
    /// The rest of the response being written.
    parts: std::vec::IntoIter<Bytes>,
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(part) = self.parts.next() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(parts))) => {
                self.parts = parts.into_iter();
                let first = self.parts.next().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(end) => {
                self.done = true;
                let status = match end {
                    Some(Err(status)) => status,
                    _ => Status::ok(""),
                };
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

// Protocol buffer encoding of the two response messages, straight from the shared
// resources (no copy of a resource but the one into the frame).

fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

pub(crate) fn put_varint(v: usize, buf: &mut Vec<u8>) {
    let mut v = v as u64;
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited field's size: key (tags here are below 16), length, content.
fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

pub(crate) fn put_field_header(tag: u8, len: usize, buf: &mut Vec<u8>) {
    buf.push((tag << 3) | 2);
    put_varint(len, buf);
}

/// A string field, omitted when empty (proto3).
fn str_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

pub(crate) fn put_str(tag: u8, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_field_header(tag, s.len(), buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A `google.protobuf.Any`'s encoded size.
fn any_len(r: &Resource) -> usize {
    str_field_len(&r.any.type_url)
        + if r.any.value.is_empty() {
            0
        } else {
            field_len(r.any.value.len())
        }
}

fn put_any(r: &Resource, buf: &mut Vec<u8>) {
    put_str(1, &r.any.type_url, buf);
    if !r.any.value.is_empty() {
        put_field_header(2, r.any.value.len(), buf);
        buf.extend_from_slice(&r.any.value);
    }
}

/// Shared resources smaller than this are copied into the response's one buffer;
/// larger ones are written from the shared buffer, between the response's own parts.
const COPY_BELOW: usize = 16 << 10;

/// A gRPC frame: this response's own fields, its version (field 1) before the shared
/// encoded resources and `tail` after them.
fn frame(
    version: &str,
    changes: &Arc<Changes>,
    tail_len: usize,
    tail: impl FnOnce(&mut Vec<u8>),
) -> Vec<Bytes> {
    let mut buf = Vec::with_capacity(64 + tail_len);
    buf.extend_from_slice(&[0; 5]);
    put_str(1, version, &mut buf);
    let head_len = buf.len() - 5;
    let len = head_len + changes.wire.len() + tail_len;
    buf[1..5].copy_from_slice(&(len as u32).to_be_bytes());
    if changes.wire.len() < COPY_BELOW {
        buf.reserve_exact(changes.wire.len() + tail_len);
        buf.extend_from_slice(&changes.wire);
        tail(&mut buf);
        debug_assert_eq!(buf.len(), 5 + len);
        return vec![Bytes::from(buf)];
    }
    let mut end = Vec::with_capacity(tail_len);
    tail(&mut end);
    debug_assert_eq!(end.len(), tail_len);
    vec![
        Bytes::from(buf),
        Bytes::from_owner(SharedWire(changes.clone())),
        Bytes::from(end),
    ]
}

/// A `DiscoveryResponse`, framed: fields in number order, as protobuf encoders write them.
fn encode_sotw(version: &str, changes: &Arc<Changes>, type_url: &str, nonce: &str) -> Vec<Bytes> {
    frame(
        version,
        changes,
        str_field_len(type_url) + str_field_len(nonce),
        |b| {
            put_str(4, type_url, b);
            put_str(5, nonce, b);
        },
    )
}

/// A delta `Resource`'s encoded size.
fn delta_resource_len(r: &Resource) -> usize {
    str_field_len(&r.name) + str_field_len(&r.version) + field_len(any_len(r))
}

/// A `DeltaDiscoveryResponse`, framed.
fn encode_delta(version: &str, changes: &Arc<Changes>, type_url: &str, nonce: &str) -> Vec<Bytes> {
    let removed = &changes.removed;
    frame(
        version,
        changes,
        str_field_len(type_url)
            + str_field_len(nonce)
            + removed.iter().map(|n| field_len(n.len())).sum::<usize>(),
        |b| {
            put_str(4, type_url, b);
            put_str(5, nonce, b);
            for n in removed {
                put_field_header(6, n.len(), b);
                b.extend_from_slice(n.as_bytes());
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn resource(name: &str, size: usize) -> Resource {
        Resource {
            name: name.into(),
            any: Arc::new(Any {
                type_url: resources::ENDPOINT.into(),
                value: vec![7; size],
            }),
            version: format!("v-{name}"),
        }
    }

    /// The message of a frame sent in parts.
    fn unframe(parts: &[Bytes]) -> Vec<u8> {
        let b: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(b[0], 0);
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(b.len(), 5 + len);
        b[5..].to_vec()
    }

    fn changes(wire: Wire, rs: &[&Resource], removed: Vec<String>) -> Arc<Changes> {
        Arc::new(Changes::new(wire, rs, removed))
    }

    #[test]
    fn responses_encode_as_prost_does() {
        let rs = [resource("a", 0), resource("b", 200), resource("c", 70_000)];
        let refs: Vec<&Resource> = rs.iter().collect();
        let shared = changes(Wire::Sotw, &refs, vec![]);
        let sotw = encode_sotw("v1", &shared, resources::ENDPOINT, "7");
        assert_eq!(
            sotw.len(),
            3,
            "large resources are sent from the shared buffer"
        );
        assert_eq!(sotw[1].as_ptr(), shared.wire.as_ptr(), "not copied");
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: rs.iter().map(|r| (*r.any).clone()).collect(),
            type_url: resources::ENDPOINT.into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(
            DiscoveryResponse::decode(unframe(&sotw).as_slice()).unwrap(),
            expected
        );
        assert_eq!(unframe(&sotw), expected.encode_to_vec());
        // Small ones are copied into one buffer.
        let small = encode_sotw("v1", &changes(Wire::Sotw, &refs[..2], vec![]), "t", "1");
        assert_eq!(small.len(), 1);
        assert_eq!(
            DiscoveryResponse::decode(unframe(&small).as_slice())
                .unwrap()
                .resources
                .len(),
            2
        );

        let removed = vec!["gone".to_string(), String::new()];
        let delta = encode_delta(
            "",
            &changes(Wire::Delta, &refs, removed.clone()),
            resources::ENDPOINT,
            "8",
        );
        let expected = DeltaDiscoveryResponse {
            resources: rs
                .iter()
                .map(
                    |r| envoy_types::pb::envoy::service::discovery::v3::Resource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some((*r.any).clone()),
                        ..Default::default()
                    },
                )
                .collect(),
            type_url: resources::ENDPOINT.into(),
            removed_resources: removed.clone(),
            nonce: "8".into(),
            ..Default::default()
        };
        assert_eq!(
            DeltaDiscoveryResponse::decode(unframe(&delta).as_slice()).unwrap(),
            expected
        );
        assert_eq!(unframe(&delta), expected.encode_to_vec());
        let empty = encode_sotw("", &Arc::default(), "", "");
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].as_ref(), &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn sotw_requests_are_read_from_the_wire() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let req = DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local".into(),
                ..Default::default()
            }),
            resource_names: vec!["x".into(), String::new(), "y".repeat(300)],
            type_url: resources::ENDPOINT.into(),
            response_nonce: "3".into(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        };
        let mut seen = SeenRuns::default();
        let r = SotwRequest::from_wire(Bytes::from(req.encode_to_vec()), &mut seen).unwrap();
        assert!(r.names_digest.is_some(), "the names are one run");
        assert_eq!(r.version_info, "v1");
        assert_eq!(r.node, req.node);
        assert_eq!(r.type_url, req.type_url);
        assert_eq!(r.response_nonce, "3");
        assert_eq!(r.error_detail, req.error_detail);
        let names: Vec<&[u8]> = r.names().collect();
        let expected: Vec<&[u8]> = req.resource_names.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(names, expected);
        let mut truncated = req.encode_to_vec();
        truncated.pop();
        assert!(SotwRequest::from_wire(Bytes::from(truncated), &mut SeenRuns::default()).is_err());

        // The same names again (an ACK) are recognised whole and read the same.
        let again = DiscoveryRequest {
            node: None,
            response_nonce: "4".into(),
            error_detail: None,
            ..req.clone()
        };
        let a = SotwRequest::from_wire(Bytes::from(again.encode_to_vec()), &mut seen).unwrap();
        assert_eq!(a.names_digest, r.names_digest);
        assert_eq!((a.names_count, a.star), (3, false));
        assert_eq!(a.names().collect::<Vec<_>>(), expected);
        assert_eq!(a.response_nonce, "4");
        // Names that only begin with the earlier run, or differ in a byte, are read
        // one by one.
        let mut longer = again.clone();
        longer.resource_names.push("*".into());
        let l = SotwRequest::from_wire(Bytes::from(longer.encode_to_vec()), &mut seen).unwrap();
        assert_eq!((l.names_count, l.star), (4, true));
        assert_ne!(l.names_digest, r.names_digest);
        let mut other = again.clone();
        other.resource_names[0] = "z".into();
        let o = SotwRequest::from_wire(Bytes::from(other.encode_to_vec()), &mut seen).unwrap();
        assert_eq!(o.names().next(), Some(&b"z"[..]));
        assert_ne!(o.names_digest, r.names_digest);
        assert_eq!(seen.0.len(), 3);
    }

    #[test]
    fn varints() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 21,
            usize::MAX >> 1,
        ] {
            let mut buf = Vec::new();
            put_varint(v, &mut buf);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
