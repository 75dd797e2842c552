//! The Aggregated Discovery Service, State-of-the-World and Delta, over one generator.
//!
//! Per connection and type it tracks what was sent (version, nonce), what the proxy
//! accepted (ACK) or rejected (NACK, with Envoy's error), and what it subscribed to.
//! A NACKed response is not sent again: the proxy keeps serving its last accepted
//! config, and the error shows in [`DiscoveryServer::statuses`]. A reconnecting proxy
//! whose versions match what would be sent gets nothing new. On every registry
//! snapshot each proxy's config is generated again, and only types (SotW) or
//! resources (Delta) whose content changed are sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use isthmus_registry::Snapshot;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proxy::{Proxy, ProxyError};
use crate::resources::{self, ProxyResources, Resource};
use envoy_types::pb::envoy::config::core::v3::Node;

/// Config generation: a pure function of (registry snapshot, proxy).
pub trait Generator: Send + Sync + 'static {
    /// Shared: proxies with the same view of the mesh may receive the same config.
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources>;
}

/// What one proxy has of one type, for the debug API.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// Resource names subscribed to; `["*"]` for a wildcard subscription.
    pub subscribed: Vec<String>,
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

struct Inner {
    snapshots: watch::Receiver<Snapshot>,
    generator: Arc<dyn Generator>,
    connections: Mutex<BTreeMap<u64, ConnectionStatus>>,
    next_connection: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ADS server.
#[derive(Clone)]
pub struct DiscoveryServer {
    inner: Arc<Inner>,
}

impl DiscoveryServer {
    pub fn new(snapshots: watch::Receiver<Snapshot>, generator: Arc<dyn Generator>) -> Self {
        Self {
            inner: Arc::new(Inner {
                snapshots,
                generator,
                connections: Mutex::new(BTreeMap::new()),
                next_connection: AtomicU64::new(1),
            }),
        }
    }

    /// The tonic service to mount.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self.clone()).max_decoding_message_size(64 << 20)
    }

    /// Every connected proxy and its per-type sync state.
    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        lock(&self.inner.connections).values().cloned().collect()
    }

    /// The config one proxy receives now (by node id), generated from the current snapshot.
    pub fn config_for(&self, proxy_id: &str) -> Option<(Proxy, Arc<ProxyResources>)> {
        let proxy = lock(&self.inner.connections)
            .values()
            .find_map(|c| c.proxy.clone().filter(|p| p.id == proxy_id))?;
        let snap = self.inner.snapshots.borrow().clone();
        let res = self.inner.generator.generate(&snap, &proxy);
        Some((proxy, res))
    }
}

/// Registers a connection for the debug API; unregisters when dropped.
struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

impl Registration {
    fn new(inner: &Arc<Inner>, protocol: &'static str) -> Self {
        let id = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        lock(&inner.connections).insert(
            id,
            ConnectionStatus {
                connection: id,
                protocol,
                proxy: None,
                connected_at: SystemTime::now(),
                types: BTreeMap::new(),
            },
        );
        Self {
            inner: inner.clone(),
            id,
        }
    }

    fn update(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        if let Some(c) = lock(&self.inner.connections).get_mut(&self.id) {
            f(c);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.connections).remove(&self.id);
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for DiscoveryServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let conn = Sotw {
            conn: Conn::new(&self.inner, tx),
            types: HashMap::new(),
        };
        tokio::spawn(drive(conn, request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let conn = Delta {
            conn: Conn::new(&self.inner, tx),
            types: HashMap::new(),
        };
        tokio::spawn(drive(conn, request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What both protocol variants keep of a connection: the proxy, its current config,
/// and the way back to it.
struct Conn<R> {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Result<R, Status>>,
    proxy: Option<Proxy>,
    current: Arc<ProxyResources>,
    nonce: u64,
}

impl<R> Conn<R> {
    fn new(inner: &Arc<Inner>, tx: mpsc::Sender<Result<R, Status>>) -> Self {
        Self {
            inner: inner.clone(),
            tx,
            proxy: None,
            current: Arc::default(),
            nonce: 0,
        }
    }

    /// Generates the proxy's config from the current snapshot.
    fn regenerate(&mut self) {
        if let Some(p) = &self.proxy {
            let snap = self.inner.snapshots.borrow().clone();
            self.current = self.inner.generator.generate(&snap, p);
        }
    }

    /// Learns who the proxy is from the first request's node.
    fn identify(
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
        self.proxy = Some(proxy);
        self.regenerate();
        Ok(())
    }
}

/// What differs between State-of-the-World and Delta.
trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const NAME: &'static str;
    fn conn(&mut self) -> &mut Conn<Self::Response>;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn subscribed(&self, type_url: &str) -> bool;
    /// Handles a request from an identified proxy.
    fn on_request(
        &mut self,
        reg: &Registration,
        req: Self::Request,
    ) -> impl Future<Output = ()> + Send;
    /// Sends what changed of one type after the registry changed.
    fn push(
        &mut self,
        reg: &Registration,
        type_url: &'static str,
    ) -> impl Future<Output = ()> + Send;
}

/// One stream: requests from the proxy and registry snapshots, until either ends.
async fn drive<P: Protocol>(mut p: P, mut inbound: Streaming<P::Request>) {
    let inner = p.conn().inner.clone();
    let reg = Registration::new(&inner, P::NAME);
    let mut snapshots = inner.snapshots.clone();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let identified = p.conn().identify(&reg, P::node(&req), P::NAME);
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
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                if p.conn().proxy.is_some() {
                    p.conn().regenerate();
                    for t in resources::TYPES {
                        if p.subscribed(t) {
                            p.push(&reg, t).await;
                        }
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

// ---------------------------------------------------------------------------------
// State of the World

#[derive(Default)]
struct SotwType {
    /// None: every resource of the type.
    names: Option<BTreeSet<String>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    /// For EDS and RDS: what the proxy has, name → version, so that a push carries only
    /// the resources that changed (Envoy keeps those of these types a response omits).
    sent_resources: HashMap<String, String>,
}

struct Sotw {
    conn: Conn<DiscoveryResponse>,
    types: HashMap<String, SotwType>,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn conn(&mut self) -> &mut Conn<DiscoveryResponse> {
        &mut self.conn
    }

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn subscribed(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }

    async fn on_request(&mut self, reg: &Registration, req: DiscoveryRequest) {
        self.request(reg, req).await;
    }

    async fn push(&mut self, reg: &Registration, type_url: &'static str) {
        self.respond(reg, type_url, "registry changed").await;
    }
}

impl Sotw {
    fn selected(&self, type_url: &str) -> Vec<&Resource> {
        let all = self.conn.current.of(type_url);
        match self.types.get(type_url).and_then(|t| t.names.as_ref()) {
            None => all.into_iter().flat_map(|m| m.values()).collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| all.and_then(|m| m.get(n)))
                .collect(),
        }
    }

    async fn request(&mut self, reg: &Registration, req: DiscoveryRequest) {
        let type_url = req.type_url.clone();
        let state = self.types.entry(type_url.clone()).or_default();
        if !req.response_nonce.is_empty() {
            if state.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                // A reply to an older response: the newer one is on its way.
                return;
            }
            if let Some(err) = nack_message(&req.error_detail) {
                tracing::warn!(proxy = ?self.conn.proxy.as_ref().map(|p| &p.id), r#type = resources::short(&type_url), version = ?state.sent_version, error = %err, "proxy rejected config (NACK); it keeps its last accepted config");
                status_of(reg, &type_url, |s| s.nack = Some(err));
                return;
            }
            status_of(reg, &type_url, |s| {
                s.acked_version = Some(req.version_info.clone());
                s.nack = None;
            });
        }
        let names: BTreeSet<String> = req
            .resource_names
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let wildcard = req.resource_names.iter().any(|n| n == "*")
            || (names.is_empty() && resources::wildcard_by_default(&type_url));
        state.names = if wildcard { None } else { Some(names) };
        let first = state.sent_nonce.is_none();
        if first && !req.version_info.is_empty() {
            // A reconnect: if the proxy already has what would be sent, send nothing.
            let version = ProxyResources::version_of(self.selected(&type_url).into_iter());
            if version == req.version_info {
                let state = self.types.entry(type_url.clone()).or_default();
                state.sent_version = Some(version.clone());
                tracing::debug!(r#type = resources::short(&type_url), %version, "proxy reconnected with the current version; nothing to send");
                status_of(reg, &type_url, |s| {
                    s.sent_version = Some(version.clone());
                    s.acked_version = Some(version);
                });
                return;
            }
        }
        let reason = if first {
            "proxy asked"
        } else {
            "subscription changed"
        };
        self.respond(reg, &type_url, reason).await;
    }

    /// Sends the type's resources if they differ from what was last sent (always on the
    /// first request of a type).
    async fn respond(&mut self, reg: &Registration, type_url: &str, reason: &str) {
        // Most pushes change nothing for this proxy and type: decide that before copying.
        let version = ProxyResources::version_of(self.selected(type_url).into_iter());
        if self
            .types
            .get(type_url)
            .and_then(|t| t.sent_version.as_deref())
            == Some(version.as_str())
        {
            // Sent already, or resumed on reconnect with this version.
            return;
        }
        let selected: Vec<Resource> = self.selected(type_url).into_iter().cloned().collect();
        let state = self.types.entry(type_url.to_string()).or_default();
        let incremental = !resources::wildcard_by_default(type_url) && state.sent_nonce.is_some();
        if let Some(names) = &state.names {
            state.sent_resources.retain(|n, _| names.contains(n));
        }
        let count = selected.len();
        let changed: Vec<Resource> = if incremental {
            selected
                .into_iter()
                .filter(|r| state.sent_resources.get(&r.name) != Some(&r.version))
                .collect()
        } else {
            selected
        };
        for r in &changed {
            state
                .sent_resources
                .insert(r.name.clone(), r.version.clone());
        }
        self.conn.nonce += 1;
        let nonce = self.conn.nonce.to_string();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: changed.into_iter().map(|r| (*r.any).clone()).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let state = self.types.entry(type_url.to_string()).or_default();
        state.sent_version = Some(version.clone());
        state.sent_nonce = Some(nonce.clone());
        let subscribed = match &state.names {
            None => vec!["*".to_string()],
            Some(n) => n.iter().cloned().collect(),
        };
        tracing::debug!(proxy = ?self.conn.proxy.as_ref().map(|p| &p.id), r#type = resources::short(type_url), %version, resources = count, reason, "push");
        status_of(reg, type_url, |s| {
            s.sent_version = Some(version);
            s.sent_nonce = Some(nonce);
            s.resources = count;
            s.pushes += 1;
            s.subscribed = subscribed;
        });
        let _ = self.conn.tx.send(Ok(response)).await;
    }
}

// ---------------------------------------------------------------------------------
// Delta

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy has: name → version.
    known: BTreeMap<String, String>,
    sent_nonce: Option<String>,
    sent_version: Option<String>,
    started: bool,
}

struct Delta {
    conn: Conn<DeltaDiscoveryResponse>,
    types: HashMap<String, DeltaType>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn conn(&mut self) -> &mut Conn<DeltaDiscoveryResponse> {
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

    async fn push(&mut self, reg: &Registration, type_url: &'static str) {
        self.respond(reg, type_url, false).await;
    }
}

impl Delta {
    async fn request(&mut self, reg: &Registration, req: DeltaDiscoveryRequest) {
        let type_url = req.type_url.clone();
        let state = self.types.entry(type_url.clone()).or_default();
        if !req.response_nonce.is_empty() {
            if state.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                return;
            }
            if let Some(err) = nack_message(&req.error_detail) {
                tracing::warn!(proxy = ?self.conn.proxy.as_ref().map(|p| &p.id), r#type = resources::short(&type_url), error = %err, "proxy rejected config (NACK); it keeps its last accepted config");
                status_of(reg, &type_url, |s| s.nack = Some(err));
                return;
            }
            let version = state.sent_version.clone();
            status_of(reg, &type_url, |s| {
                s.acked_version = version;
                s.nack = None;
            });
        }
        let first = !state.started;
        if first {
            state.started = true;
            state.known = req.initial_resource_versions.clone().into_iter().collect();
            state.wildcard = req.resource_names_subscribe.is_empty()
                && resources::wildcard_by_default(&type_url);
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(n.clone());
                if first {
                    continue;
                }
                // A newly subscribed name must be sent even if the proxy had it once.
                state.known.remove(n);
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(n);
                state.known.remove(n);
            }
        }
        self.respond(reg, &type_url, first).await;
    }

    /// Sends what changed for the type: new or changed resources, and removed names.
    async fn respond(&mut self, reg: &Registration, type_url: &str, always: bool) {
        let Some(state) = self.types.get_mut(type_url) else {
            return;
        };
        let empty = BTreeMap::new();
        let all = self.conn.current.of(type_url).unwrap_or(&empty);
        let wanted: Vec<&Resource> = if state.wildcard {
            all.values().collect()
        } else {
            state.names.iter().filter_map(|n| all.get(n)).collect()
        };
        let changed: Vec<&Resource> = wanted
            .iter()
            .copied()
            .filter(|r| state.known.get(&r.name) != Some(&r.version))
            .collect();
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
        let removed: Vec<String> = state
            .known
            .keys()
            .filter(|n| !wanted_names.contains(n.as_str()))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && !always {
            return;
        }
        self.conn.nonce += 1;
        let nonce = self.conn.nonce.to_string();
        for r in &changed {
            state.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            state.known.remove(n);
        }
        state.sent_nonce = Some(nonce.clone());
        let version = ProxyResources::version_of(wanted.iter().copied());
        state.sent_version = Some(version.clone());
        let response = DeltaDiscoveryResponse {
            system_version_info: version,
            resources: changed
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some((*r.any).clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_string(),
            removed_resources: removed.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let subscribed = if state.wildcard {
            vec!["*".to_string()]
        } else {
            state.names.iter().cloned().collect()
        };
        let (count, total) = (changed.len(), wanted.len());
        tracing::debug!(proxy = ?self.conn.proxy.as_ref().map(|p| &p.id), r#type = resources::short(type_url), changed = count, removed = removed.len(), "push");
        status_of(reg, type_url, |s| {
            s.sent_version = Some(response.system_version_info.clone());
            s.sent_nonce = Some(nonce);
            s.resources = total;
            s.pushes += 1;
            s.subscribed = subscribed;
        });
        let _ = self.conn.tx.send(Ok(response)).await;
    }
}
