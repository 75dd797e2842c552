//! Pushes: registry snapshots gathered (debounce), every connected proxy's config
//! generated, and new configs handed to their connections; the [`DiscoveryServer`].

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use isthmus_model::ClusterId;
use isthmus_registry::Snapshot;
use tokio::sync::{Notify, watch};

use super::connection::ConnectionStatus;
use super::grpc::AdsService;
use super::prepared::Prepared;
use super::{Generator, Inner, PushOptions, lock};
use crate::proxy::{Proxy, ProxyKind};
use crate::resources::{PerType, ProxyResources, TypeUrl};

/// A new config for one connection, from a push.
pub(super) struct Update {
    pub(super) config: Arc<Prepared>,
    pub(super) snapshot_version: u64,
    pub(super) round: Arc<Round>,
}

/// Where the push task leaves a connection's next config: only the latest is kept.
#[derive(Default)]
pub(super) struct Mailbox {
    pub(super) update: Mutex<Option<Update>>,
    pub(super) notify: Notify,
}

/// An identified connection, as the push task sees it.
pub(super) struct Handle {
    pub(super) proxy: Arc<Proxy>,
    /// The config last handed to the connection, and the snapshot version it is of.
    pub(super) assigned: Option<(Arc<Prepared>, u64)>,
    pub(super) mailbox: Arc<Mailbox>,
}

/// Waits for registry changes, gathers them (debounce), and pushes.
pub(super) async fn push_loop(
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
pub(super) struct Round {
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
    responses: PerType<AtomicU64>,
    resources: AtomicU64,
    removed: AtomicU64,
    bytes: AtomicU64,
}

impl Round {
    pub(super) fn record(&self, t: TypeUrl, resources: usize, removed: usize, bytes: usize) {
        self.responses[t].fetch_add(1, Ordering::Relaxed);
        self.resources
            .fetch_add(resources as u64, Ordering::Relaxed);
        self.removed.fetch_add(removed as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Round {
    /// A connection was sent something of the push.
    pub(super) fn sent_one(&self) {
        self.sent_to.fetch_add(1, Ordering::Relaxed);
        let at = self.started.elapsed().as_nanos().max(1) as u64;
        let _ = self
            .first_sent
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        let mut sent = String::new();
        for (t, n) in self.responses.iter() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = write!(
                    sent,
                    "{}{} {n}",
                    if sent.is_empty() { "" } else { ", " },
                    t.short()
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

/// Proxies alike, generated together: they mostly share one config.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Group {
    kind: ProxyKind,
    namespace: String,
    cluster: ClusterId,
}

/// Generates every connected proxy's config from `snap` and hands the changed ones to
/// their connections. Proxies alike (kind, namespace, cluster) mostly share one config:
/// they are generated together, groups in parallel (one thread per core), and each
/// group's configs go out as soon as they are generated.
async fn push_round(inner: &Arc<Inner>, snap: Snapshot, why: String, since: Instant) {
    let id = inner.next_round.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    let mut groups: HashMap<Group, Vec<Target>> = HashMap::new();
    for (conn, h) in lock(&inner.proxies).iter() {
        let p = &h.proxy;
        let group = Group {
            kind: p.kind,
            namespace: p.namespace.clone(),
            cluster: p.cluster.clone(),
        };
        groups.entry(group).or_default().push((*conn, p.clone()));
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
    pub(super) inner: Arc<Inner>,
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
            inner: Arc::new(Inner::new(snapshots, generator, options)),
        }
    }

    /// The gRPC service to mount on a tonic server.
    pub fn service(&self) -> AdsService {
        AdsService::new(self.inner.clone())
    }

    /// Every connected proxy and its per-type sync state.
    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        let all = self.inner.tracked();
        all.iter().map(|c| lock(c).status.clone()).collect()
    }

    /// The config one proxy receives now (by node id), generated from the current snapshot.
    pub fn config_for(&self, proxy_id: &str) -> Option<(Proxy, Arc<ProxyResources>)> {
        let all = self.inner.tracked();
        let proxy = all
            .iter()
            .find_map(|c| lock(c).status.proxy.clone().filter(|p| p.id == proxy_id))?;
        let snap = self.inner.snapshots.borrow().clone();
        let res = self.inner.generator.generate(&snap, &proxy);
        Some((proxy, res))
    }
}
