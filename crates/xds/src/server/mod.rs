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
//!
//! The parts, each in its module:
//! - [`subscription`]: subscribed name sets, shared between connections.
//! - [`prepared`]: a generated config as the server pushes it (versions, diffs between
//!   configs, encoded changes shared by the connections sending the same ones).
//! - [`push`]: debounce, generation of every proxy's config, hand-over to connections;
//!   [`DiscoveryServer`].
//! - [`connection`]: what both protocol variants share of a stream, and its status.
//! - [`sotw`] and [`delta`]: the two protocol variants.
//! - [`holders`]: which proxies hold an endpoint (the debug API's `/debug/endpointz`).
//! - [`grpc`]: the gRPC service, requests read from the body, responses written to it.
//! - [`wire`]: protocol buffer decoding of requests and encoding of responses.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use isthmus_model::sync::lock;
use isthmus_registry::Snapshot;
use tokio::sync::watch;

mod connection;
mod delta;
mod grpc;
mod holders;
mod prepared;
mod push;
mod sotw;
mod subscription;
pub(crate) mod wire;
#[cfg(test)]
mod wire_props;

pub use crate::generator::Generator;
pub use connection::{ConnectionStatus, TypeStatus};
pub use grpc::AdsService;
pub use holders::EndpointHolder;
pub use push::DiscoveryServer;
pub use subscription::Subscription;
#[doc(hidden)]
pub use wire::fuzz_requests;

use crate::proxy::Proxy;
use crate::resources::ProxyResources;
use connection::Tracked;
use prepared::Prepared;
use push::Handle;
use subscription::Names;

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

/// What the server shares between its streams, the push task and the debug API.
struct Inner {
    snapshots: watch::Receiver<Snapshot>,
    generator: Arc<dyn Generator>,
    options: PushOptions,
    /// Each connection's state has a lock of its own: connections update theirs on
    /// every response and ACK without waiting for each other.
    connections: Mutex<BTreeMap<u64, Arc<Mutex<Tracked>>>>,
    proxies: Mutex<HashMap<u64, Handle>>,
    /// Prepared configs by the address of their generated resources.
    configs: Mutex<(HashMap<usize, Weak<Prepared>>, usize)>,
    names: Names,
    empty: Arc<Prepared>,
    next_connection: AtomicU64,
    next_round: AtomicU64,
    pushing: AtomicBool,
}

impl Inner {
    fn new(
        snapshots: watch::Receiver<Snapshot>,
        generator: Arc<dyn Generator>,
        options: PushOptions,
    ) -> Self {
        Self {
            snapshots,
            generator,
            options,
            connections: Mutex::new(BTreeMap::new()),
            proxies: Mutex::new(HashMap::new()),
            configs: Mutex::new((HashMap::new(), 64)),
            names: Names::default(),
            empty: Arc::new(Prepared::new(Arc::default())),
            next_connection: AtomicU64::new(1),
            next_round: AtomicU64::new(0),
            pushing: AtomicBool::new(false),
        }
    }

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
        tokio::spawn(push::push_loop(
            Arc::downgrade(self),
            rx,
            last,
            self.options,
        ));
    }

    /// Every connection's shared state, each to lock on its own.
    fn tracked(&self) -> Vec<Arc<Mutex<Tracked>>> {
        lock(&self.connections).values().cloned().collect()
    }
}
