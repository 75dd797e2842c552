//! The Delta (incremental) protocol: requests subscribe and unsubscribe names;
//! responses carry changed resources and the names of removed ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::bytes::Bytes;

use super::connection::{Outgoing, Protocol, Reason, Registration, Stream, TypeState};
use super::prepared::{Changes, Wire};
use super::push::Round;
use super::subscription::Subscription;
use super::wire::encode_delta;
use crate::resources::{Resource, TypeUrl};

/// What a Delta stream keeps of one type the proxy asked for.
#[derive(Default)]
pub(super) struct DeltaType {
    state: TypeState,
    /// What a reconnecting proxy said it has, until the first response.
    initial: Option<HashMap<String, String>>,
    started: bool,
}

impl Protocol for DeltaType {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn encode_empty(type_url: &str, nonce: &str) -> Vec<Bytes> {
        encode_delta("", &Arc::default(), type_url, nonce)
    }

    fn subscription(&self) -> &Subscription {
        &self.state.sub
    }

    async fn on_request(
        stream: &mut Stream<Self>,
        reg: &Registration,
        t: TypeUrl,
        req: DeltaDiscoveryRequest,
    ) {
        stream.request(reg, t, req).await;
    }

    async fn push(
        stream: &mut Stream<Self>,
        reg: &Registration,
        t: TypeUrl,
        sub: Subscription,
        round: &Round,
    ) -> bool {
        stream
            .respond(reg, t, sub, &[], false, Reason::Push(round))
            .await
    }
}

impl Stream<DeltaType> {
    async fn request(&mut self, reg: &Registration, t: TypeUrl, req: DeltaDiscoveryRequest) {
        let DeltaType {
            state,
            initial,
            started,
        } = self.types[t].get_or_insert_default();
        let proxy = self.conn.proxy_id();
        let answer = &req.response_nonce;
        if !state.answer(reg, t, proxy, answer, &req.error_detail, || {
            state.sent_version.clone()
        }) {
            return;
        }
        let first = !*started;
        let mut wildcard = state.sub.is_wildcard();
        if first {
            *started = true;
            if !req.initial_resource_versions.is_empty() {
                *initial = Some(req.initial_resource_versions.clone());
            }
            wildcard = req.resource_names_subscribe.is_empty() && t.wildcard_by_default();
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
            let mut names: BTreeSet<&str> = state.sub.names().collect();
            for n in req.resource_names_subscribe.iter().filter(|n| *n != "*") {
                names.insert(n);
            }
            for n in req.resource_names_unsubscribe.iter().filter(|n| *n != "*") {
                names.remove(n.as_str());
            }
            self.conn.inner.names.subscription(
                wildcard,
                names.iter().map(|n| n.as_bytes()),
                &state.sub,
            )
        } else {
            state.sub.with_wildcard(wildcard)
        };
        if !first && force.is_empty() && state.holds(&self.conn.current, &sub) {
            // An ACK of the current state.
            return;
        }
        self.respond(reg, t, sub, &force, first, Reason::of_request(first))
            .await;
    }

    /// Sends what changed for the type: new or changed resources, and removed names.
    async fn respond(
        &mut self,
        reg: &Registration,
        t: TypeUrl,
        sub: Subscription,
        force: &[String],
        always: bool,
        reason: Reason<'_>,
    ) -> bool {
        let cur = self.conn.current.clone();
        let Some(DeltaType { state, initial, .. }) = &mut self.types[t] else {
            return false;
        };
        let changes = match (&state.base, initial.take()) {
            (Some(base), _) if force.is_empty() => {
                cur.changes(Wire::Delta, Some(base), t, &state.sub, &sub)
            }
            (Some(base), _) => {
                let (changed, removed) = cur.changes_since(base, t, &state.sub, &sub, force);
                Arc::new(Changes::new(Wire::Delta, &changed, removed))
            }
            (None, Some(initial)) => {
                let wanted = cur.selected(t, &sub);
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
            (None, None) => cur.changes(Wire::Delta, None, t, &sub, &sub),
        };
        if changes.is_empty() && !always {
            state.advance(reg, t, cur, sub);
            return false;
        }
        let nonce = self.conn.next_nonce();
        let version = cur.version(t, &sub.with_wildcard(true));
        let (count, removed_count, bytes) = (changes.count, changes.removed.len(), changes.bytes);
        tracing::debug!(
            proxy = self.conn.proxy_id(),
            r#type = t.short(),
            changed = count,
            removed = removed_count,
            bytes,
            reason = reason.as_str(),
            "push"
        );
        if let Some(round) = reason.round() {
            round.record(t, count, removed_count, bytes);
        }
        let out = Outgoing {
            frame: encode_delta(&version, &changes, t.as_str(), &nonce),
            config: cur,
            sub,
            version,
            nonce,
            count,
        };
        self.conn.send(reg, t, state, out).await
    }
}
