//! What State-of-the-World and Delta streams share: the connection's registration with
//! the server (its status for the debug API, its mailbox for pushes), the proxy and its
//! current config, and the loop that drives a stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use prost::bytes::Bytes;
use serde::Serialize;
use tonic::Status;

use super::grpc::{Requests, Responses};
use super::holders::{Held, Holding};
use super::prepared::Prepared;
use super::push::{Handle, Mailbox, Round};
use super::subscription::Subscription;
use super::wire::WireMessage;
use super::{Inner, lock};
use crate::proxy::{Proxy, ProxyError};
use crate::resources::{PerType, TypeUrl};

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

/// A connection's state as the debug API reads it.
pub(super) struct Tracked {
    pub(super) status: ConnectionStatus,
    /// What the proxy was sent and accepted of each type.
    pub(super) held: PerType<Held>,
}

/// Registers a connection for the debug API and the push task; unregisters when
/// dropped.
pub(super) struct Registration {
    inner: Arc<Inner>,
    pub(super) id: u64,
    tracked: Arc<Mutex<Tracked>>,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    fn new(inner: &Arc<Inner>, protocol: &'static str) -> Self {
        let id = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Mutex::new(Tracked {
            status: ConnectionStatus {
                connection: id,
                protocol,
                proxy: None,
                connected_at: SystemTime::now(),
                types: BTreeMap::new(),
            },
            held: PerType::default(),
        }));
        lock(&inner.connections).insert(id, tracked.clone());
        Self {
            inner: inner.clone(),
            id,
            tracked,
            mailbox: Arc::default(),
        }
    }

    /// Updates the status of one type, and what the proxy holds of it.
    fn update(&self, t: TypeUrl, f: impl FnOnce(&mut TypeStatus, &mut Held)) {
        let mut tracked = lock(&self.tracked);
        let Tracked { status, held } = &mut *tracked;
        f(status.types.entry(t.short()).or_default(), &mut held[t]);
    }

    /// A response went out: `holding` is what the proxy has of the type once it
    /// accepts it.
    pub(super) fn sent(&self, t: TypeUrl, holding: Holding, version: String, count: usize) {
        self.update(t, |s, held| {
            s.sent_version = Some(version);
            s.sent_nonce = holding.nonce.clone();
            s.resources = count;
            s.pushes += 1;
            s.subscribed = holding.sub.clone();
            held.sent = Some(holding);
        });
    }

    /// The proxy accepted the response with `nonce` (the last one sent), at `version`.
    pub(super) fn acked(&self, t: TypeUrl, nonce: &str, version: Option<String>) {
        self.update(t, |s, held| {
            s.acked_version = version;
            s.nack = None;
            held.acked(nonce);
        });
    }

    /// The proxy rejected the last response.
    pub(super) fn nacked(&self, t: TypeUrl, error: String) {
        self.update(t, |s, _| s.nack = Some(error));
    }

    /// Nothing was sent: the proxy has the same resources of the type from `config`
    /// under `sub` as from the config it was last sent.
    pub(super) fn advanced(&self, t: TypeUrl, config: &Arc<Prepared>, sub: &Subscription) {
        self.update(t, |_, held| held.advanced(config, sub));
    }

    /// A reconnecting proxy has, and has accepted, `version` from `config` under `sub`.
    pub(super) fn resumed(
        &self,
        t: TypeUrl,
        config: &Arc<Prepared>,
        sub: &Subscription,
        version: String,
    ) {
        self.update(t, |s, held| {
            s.sent_version = Some(version.clone());
            s.acked_version = Some(version);
            s.subscribed = sub.clone();
            held.resumed(config, sub);
        });
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
pub(super) struct Conn {
    pub(super) inner: Arc<Inner>,
    pub(super) tx: Responses,
    proxy: Option<Arc<Proxy>>,
    pub(super) current: Arc<Prepared>,
    /// The snapshot version `current` was generated from.
    current_version: Option<u64>,
    nonce: u64,
    /// Type URLs the server does not answer that the proxy asked for.
    unknown: BTreeSet<String>,
}

impl Conn {
    pub(super) fn new(inner: &Arc<Inner>, tx: Responses) -> Self {
        Self {
            inner: inner.clone(),
            tx,
            proxy: None,
            current: inner.empty.clone(),
            current_version: None,
            nonce: 0,
            unknown: BTreeSet::new(),
        }
    }

    pub(super) fn proxy_id(&self) -> &str {
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

    pub(super) fn next_nonce(&mut self) -> String {
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
        lock(&reg.tracked).status.proxy = Some(proxy.clone());
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

    /// Sends a response of type `t`, recorded in the type's `state` and status.
    pub(super) async fn send(
        &mut self,
        reg: &Registration,
        t: TypeUrl,
        state: &mut TypeState,
        out: Outgoing,
    ) -> bool {
        state.base = Some(out.config.clone());
        state.sub = out.sub.clone();
        state.sent_version = Some(out.version.clone());
        state.sent_nonce = Some(out.nonce.clone());
        let holding = Holding {
            config: out.config,
            sub: out.sub,
            nonce: Some(out.nonce),
        };
        reg.sent(t, holding, out.version, out.count);
        let _ = self.tx.send(Ok(out.frame)).await;
        true
    }

    /// Answers the first request for a type the server does not serve with no
    /// resources (as Istio's fallback generator does), and ignores the rest: the
    /// proxy's ACKs, and subscriptions that select nothing either way.
    async fn unknown_type<P: Protocol>(&mut self, type_url: &str) {
        if self.unknown.contains(type_url) {
            return;
        }
        self.unknown.insert(type_url.to_string());
        tracing::warn!(
            proxy = self.proxy_id(),
            r#type = type_url,
            "the proxy asked for a type this server does not serve; answered with no resources"
        );
        let nonce = self.next_nonce();
        let _ = self.tx.send(Ok(P::encode_empty(type_url, &nonce))).await;
    }
}

/// What both protocols keep of a type the proxy asked for.
#[derive(Default)]
pub(super) struct TypeState {
    pub(super) sub: Subscription,
    /// The config the proxy's resources of the type were last sent from (under `sub`);
    /// none before the first response.
    pub(super) base: Option<Arc<Prepared>>,
    pub(super) sent_version: Option<String>,
    pub(super) sent_nonce: Option<String>,
}

impl TypeState {
    /// Reads what a request says of the last response (its nonce, and Envoy's error if
    /// it rejected it) and records the ACK (at `acked_version`) or NACK. Whether the
    /// request is handled further: not if it answers an older response (the newer one
    /// is on its way), nor if it rejects the last.
    pub(super) fn answer(
        &self,
        reg: &Registration,
        t: TypeUrl,
        proxy: &str,
        req_nonce: &str,
        error: &Option<envoy_types::pb::google::rpc::Status>,
        acked_version: impl FnOnce() -> Option<String>,
    ) -> bool {
        if req_nonce.is_empty() {
            return true;
        }
        if self.sent_nonce.as_deref() != Some(req_nonce) {
            return false;
        }
        if let Some(err) = nack_message(error) {
            tracing::warn!(proxy, r#type = t.short(), version = ?self.sent_version, error = %err, "proxy rejected config (NACK); it keeps its last accepted config");
            reg.nacked(t, err);
            return false;
        }
        reg.acked(t, req_nonce, acked_version());
        true
    }

    /// Whether the proxy holds `current`'s resources under `sub` already: a request
    /// that says so (an ACK) needs no answer.
    pub(super) fn holds(&self, current: &Arc<Prepared>, sub: &Subscription) -> bool {
        self.sub.same(sub) && self.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, current))
    }

    /// Nothing to send: the proxy has the same of the type from `config` under `sub`.
    pub(super) fn advance(
        &mut self,
        reg: &Registration,
        t: TypeUrl,
        config: Arc<Prepared>,
        sub: Subscription,
    ) {
        reg.advanced(t, &config, &sub);
        self.base = Some(config);
        self.sub = sub;
    }
}

/// A response for one type, encoded, and what the proxy holds of the type once it
/// accepts it: `config`'s resources under `sub`.
pub(super) struct Outgoing {
    pub(super) frame: Vec<Bytes>,
    pub(super) config: Arc<Prepared>,
    pub(super) sub: Subscription,
    pub(super) version: String,
    pub(super) nonce: String,
    /// Resources in it.
    pub(super) count: usize,
}

/// Envoy's error in a request that rejects a response (NACK).
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
pub(super) enum Reason<'a> {
    Asked,
    SubscriptionChanged,
    Push(&'a Round),
}

impl Reason<'_> {
    /// Why a request is answered: the first of its type, or one that changed what the
    /// proxy subscribed to.
    pub(super) fn of_request(first: bool) -> Self {
        if first {
            Reason::Asked
        } else {
            Reason::SubscriptionChanged
        }
    }

    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Reason::Asked => "proxy asked",
            Reason::SubscriptionChanged => "subscription changed",
            Reason::Push(_) => "config changed",
        }
    }

    pub(super) fn round(&self) -> Option<&Round> {
        match self {
            Reason::Push(r) => Some(r),
            _ => None,
        }
    }
}

/// What differs between State-of-the-World and Delta: implemented by the state a
/// stream keeps of each type the proxy asked for.
pub(super) trait Protocol: Default + Send + 'static {
    type Request: WireMessage + Send + 'static;
    const NAME: &'static str;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn type_url(req: &Self::Request) -> &str;
    /// A framed response of no resources.
    fn encode_empty(type_url: &str, nonce: &str) -> Vec<Bytes>;
    /// What the proxy subscribed to of the type.
    fn subscription(&self) -> &Subscription;
    /// Handles a request from an identified proxy for a type the server answers.
    fn on_request(
        stream: &mut Stream<Self>,
        reg: &Registration,
        t: TypeUrl,
        req: Self::Request,
    ) -> impl Future<Output = ()> + Send;
    /// Sends what changed of a type the proxy subscribed to (as `sub`) after the
    /// config changed; whether it sent.
    fn push(
        stream: &mut Stream<Self>,
        reg: &Registration,
        t: TypeUrl,
        sub: Subscription,
        round: &Round,
    ) -> impl Future<Output = bool> + Send;
}

/// One stream of a protocol: the connection, and the state of each type asked for.
pub(super) struct Stream<P> {
    pub(super) conn: Conn,
    pub(super) types: PerType<Option<P>>,
}

impl<P: Protocol> Stream<P> {
    pub(super) fn new(conn: Conn) -> Self {
        Self {
            conn,
            types: PerType::default(),
        }
    }

    /// Pushes a new config: what changed of each type subscribed to.
    async fn push(&mut self, reg: &Registration, round: &Round) -> bool {
        let mut sent = false;
        for t in TypeUrl::ALL {
            if let Some(state) = &self.types[t] {
                let sub = state.subscription().clone();
                sent |= P::push(self, reg, t, sub, round).await;
            }
        }
        sent
    }
}

/// One stream: requests from the proxy and pushed configs, until the stream ends.
pub(super) async fn drive<P: Protocol>(mut s: Stream<P>, mut inbound: Requests<P::Request>) {
    let inner = s.conn.inner.clone();
    let reg = Registration::new(&inner, P::NAME);
    let mailbox = reg.mailbox.clone();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let identified = s.conn.identify(&reg, P::node(&req), P::NAME).await;
                    if let Err(e) = identified {
                        let _ = s.conn.tx.send(Err(e)).await;
                        return;
                    }
                    match P::type_url(&req).parse::<TypeUrl>() {
                        Ok(t) => P::on_request(&mut s, &reg, t, req).await,
                        Err(_) => s.conn.unknown_type::<P>(P::type_url(&req)).await,
                    }
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
                    && s.conn.adopt(u.config, u.snapshot_version)
                    && s.push(&reg, &u.round).await
                {
                    u.round.sent_one();
                }
            }
        }
    }
}
