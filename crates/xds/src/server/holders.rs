//! What each proxy holds of a type (sent, and accepted), and which proxies hold an
//! endpoint at an address: the answer to whether a stopping pod still receives traffic
//! from a proxy that has not yet taken its endpoint out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Address, address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde::Serialize;

use super::lock;
use super::prepared::Prepared;
use super::push::DiscoveryServer;
use super::subscription::Subscription;
use crate::resources::TypeUrl;

/// The resources a proxy has of a type after a response: `config`'s, as `sub` selects
/// them (a proxy keeps what a response leaves out, so this is all it holds).
#[derive(Clone)]
pub(super) struct Holding {
    pub(super) config: Arc<Prepared>,
    pub(super) sub: Subscription,
    /// The response's nonce; none for what a proxy had before it reconnected.
    pub(super) nonce: Option<String>,
}

/// What a proxy was last sent of a type, and what it last accepted.
#[derive(Clone, Default)]
pub(super) struct Held {
    pub(super) sent: Option<Holding>,
    pub(super) acked: Option<Holding>,
}

impl Held {
    /// The proxy accepted the response with `nonce`: if it is the last one sent, the
    /// proxy holds what it carried.
    pub(super) fn acked(&mut self, nonce: &str) {
        if let Some(sent) = &self.sent
            && sent.nonce.as_deref() == Some(nonce)
        {
            self.acked = Some(sent.clone());
        }
    }

    /// What was sent is the same under a newer config: refer to that one (and let
    /// the older go), in what was accepted too if it was the last sent.
    pub(super) fn advanced(&mut self, config: &Arc<Prepared>, sub: &Subscription) {
        let Some(sent) = &mut self.sent else { return };
        let accepted = self.acked.as_ref().is_some_and(|a| a.nonce == sent.nonce);
        sent.config = config.clone();
        sent.sub = sub.clone();
        if accepted {
            self.acked = Some(sent.clone());
        }
    }

    /// A reconnecting proxy has, and has accepted, `config`'s resources under `sub`.
    pub(super) fn resumed(&mut self, config: &Arc<Prepared>, sub: &Subscription) {
        let holding = Holding {
            config: config.clone(),
            sub: sub.clone(),
            nonce: None,
        };
        self.sent = Some(holding.clone());
        self.acked = Some(holding);
    }
}

/// A connected proxy whose endpoints (EDS) hold an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointHolder {
    /// The proxy's node id.
    pub id: String,
    /// Whether the proxy accepted a config with the address; false if it was only sent
    /// one, and has not answered yet.
    pub acked: bool,
}

impl DiscoveryServer {
    /// Every connected proxy whose last-sent or last-accepted `ClusterLoadAssignment`s
    /// have an endpoint at `ip`. Once none does, no proxy sends the address traffic
    /// from a stale endpoint.
    pub fn endpoint_holders(&self, ip: IpAddr) -> Vec<EndpointHolder> {
        let held: Vec<(String, Held)> = self
            .inner
            .tracked()
            .iter()
            .filter_map(|c| {
                let c = lock(c);
                let id = c.status.proxy.as_ref()?.id.clone();
                Some((id, c.held[TypeUrl::Endpoint].clone()))
            })
            .collect();
        // Proxies share resources: each is read once.
        let mut has_ip: HashMap<*const Any, bool> = HashMap::new();
        let mut holds = |h: &Option<Holding>| {
            h.as_ref().is_some_and(|h| {
                h.config
                    .selected(TypeUrl::Endpoint, &h.sub)
                    .into_iter()
                    .any(|r| {
                        *has_ip
                            .entry(Arc::as_ptr(&r.any))
                            .or_insert_with(|| assignment_has(&r.any, ip))
                    })
            })
        };
        held.into_iter()
            .filter_map(|(id, held)| {
                let acked = holds(&held.acked);
                (acked || holds(&held.sent)).then_some(EndpointHolder { id, acked })
            })
            .collect()
    }
}

/// Whether an encoded `ClusterLoadAssignment` has an endpoint at `ip`.
fn assignment_has(any: &Any, ip: IpAddr) -> bool {
    let Ok(cla) = ClusterLoadAssignment::decode(any.value.as_slice()) else {
        tracing::warn!(
            r#type = %any.type_url,
            "a generated endpoint assignment does not decode"
        );
        return false;
    };
    let at_ip = |a: &Option<Address>| {
        matches!(
            a.as_ref().and_then(|a| a.address.as_ref()),
            Some(address::Address::SocketAddress(s)) if s.address.parse() == Ok(ip)
        )
    };
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .any(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => {
                at_ip(&ep.address) || ep.additional_addresses.iter().any(|a| at_ip(&a.address))
            }
            _ => false,
        })
}
