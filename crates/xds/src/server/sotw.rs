//! The State-of-the-World protocol: every request names all the resources of a type
//! the proxy wants; every response carries, for clusters and listeners, all of them.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use prost::bytes::Bytes;

use super::connection::{Outgoing, Protocol, Reason, Registration, Stream, TypeState};
use super::prepared::Wire;
use super::push::Round;
use super::subscription::Subscription;
use super::wire::{SotwRequest, encode_sotw};
use crate::resources::TypeUrl;

/// What a State-of-the-World stream keeps of one type the proxy asked for.
#[derive(Default)]
pub(super) struct SotwType {
    state: TypeState,
    /// The digest of the names in the request `state.sub` was read from.
    names_digest: Option<u64>,
}

impl Protocol for SotwType {
    type Request = SotwRequest;
    const NAME: &'static str = "sotw";

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &SotwRequest) -> &str {
        &req.type_url
    }

    fn encode_empty(type_url: &str, nonce: &str) -> Vec<Bytes> {
        encode_sotw("", &Arc::default(), type_url, nonce)
    }

    fn subscription(&self) -> &Subscription {
        &self.state.sub
    }

    async fn on_request(
        stream: &mut Stream<Self>,
        reg: &Registration,
        t: TypeUrl,
        req: SotwRequest,
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
        stream.respond(reg, t, sub, Reason::Push(round)).await
    }
}

impl Stream<SotwType> {
    async fn request(&mut self, reg: &Registration, t: TypeUrl, req: SotwRequest) {
        let SotwType {
            state,
            names_digest,
        } = self.types[t].get_or_insert_default();
        let proxy = self.conn.proxy_id();
        let answer = &req.response_nonce;
        if !state.answer(reg, t, proxy, answer, &req.error_detail, || {
            Some(req.version_info.clone())
        }) {
            return;
        }
        let names = req.names().filter(|n| *n != b"*");
        let wildcard = req.star || (req.names_count == 0 && t.wildcard_by_default());
        // Envoy repeats the same names in every ACK: the same bytes, the same subscription.
        let sub = match req.names_digest {
            Some(d) if *names_digest == Some(d) => state.sub.with_wildcard(wildcard),
            _ => self
                .conn
                .inner
                .names
                .subscription(wildcard, names, &state.sub),
        };
        *names_digest = req.names_digest;
        let first = state.sent_nonce.is_none();
        if first && !req.version_info.is_empty() {
            // A reconnect: if the proxy already has what would be sent, send nothing.
            let version = self.conn.current.version(t, &sub);
            if version == req.version_info {
                state.sent_version = Some(version.clone());
                state.base = Some(self.conn.current.clone());
                state.sub = sub.clone();
                tracing::debug!(proxy = self.conn.proxy_id(), r#type = t.short(), %version, "proxy reconnected with the current version; nothing to send");
                reg.resumed(t, &self.conn.current, &sub, version);
                return;
            }
        }
        if !first && state.holds(&self.conn.current, &sub) {
            // An ACK of the current state.
            return;
        }
        self.respond(reg, t, sub, Reason::of_request(first)).await;
    }

    /// Sends what the proxy lacks of a type under subscription `sub`: for clusters and
    /// listeners every selected resource, for the others only the changed and newly
    /// subscribed ones (Envoy keeps those a response omits). Sends nothing if nothing
    /// changed; on a push, also nothing if no subscribed resource changed.
    async fn respond(
        &mut self,
        reg: &Registration,
        t: TypeUrl,
        sub: Subscription,
        reason: Reason<'_>,
    ) -> bool {
        let cur = self.conn.current.clone();
        let Some(SotwType { state, .. }) = &mut self.types[t] else {
            return false;
        };
        let version = cur.version(t, &sub);
        if state.sent_version.as_deref() == Some(version.as_str()) {
            // Sent already, or resumed on reconnect with this version.
            state.advance(reg, t, cur, sub);
            return false;
        }
        // Clusters and listeners are sent whole; of the others, what changed.
        let full = t.wildcard_by_default();
        let base = state.base.as_ref().filter(|_| !full);
        let changes = cur.changes(Wire::Sotw, base, t, &state.sub, &sub);
        if changes.is_empty() && !full && matches!(reason, Reason::Push(_)) {
            // Nothing the proxy subscribed to changed.
            state.advance(reg, t, cur, sub);
            return false;
        }
        let nonce = self.conn.next_nonce();
        let (count, bytes) = (changes.count, changes.bytes);
        tracing::debug!(proxy = self.conn.proxy_id(), r#type = t.short(), %version, resources = count, bytes, reason = reason.as_str(), "push");
        if let Some(round) = reason.round() {
            round.record(t, count, 0, bytes);
        }
        let out = Outgoing {
            frame: encode_sotw(&version, &changes, t.as_str(), &nonce),
            config: cur,
            sub,
            version,
            nonce,
            count,
        };
        self.conn.send(reg, t, state, out).await
    }
}
