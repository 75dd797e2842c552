//! Sidecar listeners and routes: the outbound capture listener and what it hands
//! connections to (HTTP listeners with per-port route tables, TLS listeners choosing by
//! SNI, TCP listeners per service address), and the inbound capture listener.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::google::protobuf::BoolValue;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::refs::{MESH_GATEWAY, hosts_overlap, port_matches};
use isthmus_model::{ClusterId, Protocol};
use isthmus_registry::Service;

use super::context::{Gen, VisibleService, Weighted};
use super::index::InboundPort;
use super::listeners::{self, Routes};
use isthmus_model::istio::peer_authentication::EffectiveMode;

use super::mtls;
use super::{
    INBOUND_CAPTURE_PORT, INBOUND_PASSTHROUGH, OUTBOUND_CAPTURE_PORT, OutboundPolicy, PASSTHROUGH,
    http_route, inbound_cluster_name, outbound_cluster_name,
};

impl Gen<'_> {
    /// The virtual host domains Istio gives a service: its FQDN and shorter forms in
    /// the proxy's namespace, its VIPs, each alone and with `:PORT`.
    fn domains(&self, svc: &Service, clusters: &[ClusterId], port: u16) -> Vec<String> {
        let host = svc.hostname.as_str();
        let mut names = vec![host.to_string()];
        let svc_ns = svc.namespace();
        let suffix = format!(".{svc_ns}.svc.{}", self.domain());
        if let Some(name) = host.strip_suffix(&suffix) {
            names.push(format!("{name}.{svc_ns}.svc"));
            names.push(format!("{name}.{svc_ns}"));
            if svc_ns == self.proxy.namespace {
                names.push(name.to_string());
            }
        }
        for c in clusters {
            if let Some(cs) = svc.clusters.get(c) {
                names.extend(cs.vips.iter().cloned());
            }
        }
        let mut out = Vec::new();
        for n in names {
            out.push(format!("{n}:{port}"));
            out.push(n);
        }
        out
    }

    /// Sidecar outbound: the capture listener, per-port listeners, and route tables.
    pub(super) fn sidecar_outbound(&self) -> (Vec<Listener>, Vec<RouteConfiguration>) {
        let mut http_ports: BTreeMap<u16, Vec<VisibleService>> = BTreeMap::new();
        let mut tcp: Vec<(&Arc<Service>, &[ClusterId], u16)> = Vec::new();
        let mut tls_ports: BTreeMap<u16, Vec<&Arc<Service>>> = BTreeMap::new();
        for (svc, clusters) in self.visible.values() {
            for p in svc.ports() {
                match p.protocol {
                    Protocol::Http | Protocol::Http2 | Protocol::Grpc => http_ports
                        .entry(p.port)
                        .or_default()
                        .push((svc, clusters.as_slice())),
                    Protocol::Https | Protocol::Tls => {
                        tls_ports.entry(p.port).or_default().push(svc);
                        tcp.push((svc, clusters.as_slice(), p.port));
                    }
                    Protocol::Udp => {}
                    _ => tcp.push((svc, clusters.as_slice(), p.port)),
                }
            }
        }
        let mut listeners = vec![self.outbound_capture()];
        let mut routes = Vec::new();
        for (port, services) in &http_ports {
            let name = format!("0.0.0.0_{port}");
            listeners.push(listeners::listener(
                &name,
                "0.0.0.0",
                *port,
                false,
                TrafficDirection::Outbound,
                vec![listeners::chain(
                    &name,
                    None,
                    vec![listeners::http_connection_manager(
                        &format!("outbound_0.0.0.0_{port}"),
                        Routes::Rds(port.to_string()),
                        false,
                    )],
                )],
            ));
            routes.push(self.sidecar_route_config(*port, services));
        }
        // TLS ports without HTTP: one listener per port choosing by SNI.
        for (port, services) in &tls_ports {
            if http_ports.contains_key(port) {
                continue;
            }
            let name = format!("0.0.0.0_{port}");
            let mut chains = Vec::new();
            let mut seen = BTreeSet::new();
            for svc in services {
                let host = svc.hostname.as_str();
                if !seen.insert(host) {
                    continue;
                }
                let dests = self
                    .tls_destinations(host, *port)
                    .unwrap_or_else(|| vec![(outbound_cluster_name(*port, "", host), 100)]);
                chains.push(listeners::chain(
                    &format!("outbound|{port}||{host}"),
                    Some(listeners::match_sni(vec![host.to_string()])),
                    vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                ));
            }
            let mut l = listeners::listener(
                &name,
                "0.0.0.0",
                *port,
                false,
                TrafficDirection::Outbound,
                chains,
            );
            l.listener_filters = vec![listeners::tls_inspector()];
            l.default_filter_chain = Some(self.passthrough_chain());
            listeners.push(l);
        }
        // TCP services with addresses: `VIP_PORT`.
        let mut names = BTreeSet::new();
        for (svc, clusters, port) in tcp {
            let host = svc.hostname.as_str();
            let vips: BTreeSet<&String> = clusters
                .iter()
                .filter_map(|c| svc.clusters.get(c))
                .flat_map(|cs| cs.vips.iter())
                .collect();
            let dests = self
                .vs_for_host(host, MESH_GATEWAY)
                .and_then(|e| self.tcp_destinations(e, port, None))
                .unwrap_or_else(|| vec![(outbound_cluster_name(port, "", host), 100)]);
            for vip in vips {
                if vip.contains('/') || vip.parse::<std::net::IpAddr>().is_err() {
                    continue;
                }
                let name = format!("{vip}_{port}");
                if !names.insert(name.clone()) {
                    continue;
                }
                listeners.push(listeners::listener(
                    &name,
                    vip,
                    port,
                    false,
                    TrafficDirection::Outbound,
                    vec![listeners::chain(
                        &name,
                        None,
                        vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                    )],
                ));
            }
        }
        (listeners, routes)
    }

    /// TLS routes of the VirtualService for `host` that apply to `port` and this
    /// sidecar (Istio's `matchTLS`), by SNI.
    fn tls_destinations(&self, host: &str, port: u16) -> Option<Weighted> {
        let e = self.vs_for_host(host, MESH_GATEWAY)?;
        let ns = &e.key.namespace;
        let source = self.source(None);
        e.vs.tls
            .iter()
            .find(|r| {
                r.r#match.iter().any(|m| {
                    port_matches(m.port, port)
                        && m.sni_hosts.iter().any(|s| hosts_overlap(s, host))
                        && source.matches_l4(m.into(), ns)
                })
            })
            .map(|r| self.weighted(&r.route, ns, port))
    }

    fn passthrough_chain(&self) -> FilterChain {
        let cluster = self.passthrough();
        listeners::chain(
            cluster,
            None,
            vec![listeners::tcp_proxy(cluster, &[(cluster.to_string(), 100)])],
        )
    }

    /// `virtualOutbound`: 0.0.0.0:15001, hands each connection to the listener of its
    /// original destination; anything else passes through (or is dropped).
    fn outbound_capture(&self) -> Listener {
        let mut l = listeners::capture_listener(
            "virtualOutbound",
            OUTBOUND_CAPTURE_PORT,
            TrafficDirection::Outbound,
        );
        l.default_filter_chain = Some(self.passthrough_chain());
        l
    }

    /// `virtualInbound`: 0.0.0.0:15006, one chain per port the workload serves (HTTP
    /// through a connection manager, else TCP) to `inbound|PORT||`; other ports pass
    /// through to the workload.
    ///
    /// With mesh mTLS (the proxy holds a workload certificate) each port takes what its
    /// PeerAuthentication says (Istio's composition, [`ConfigIndex::peer_mtls`]):
    /// PERMISSIVE (the default) a chain for mesh mTLS connections (TLS with Istio's
    /// ALPNs, seen by the TLS inspector) that terminates them with the workload's
    /// certificate and requires the peer's, beside the plain chain; STRICT only an mTLS
    /// chain, matching every connection to the port, so plaintext fails its handshake;
    /// DISABLE only the plain chain. Ports no service declares pass through, over mTLS
    /// only when the workload's mode is STRICT.
    pub(super) fn inbound_listener(&self, inbound: &[InboundPort]) -> Listener {
        let mut l = listeners::capture_listener(
            "virtualInbound",
            INBOUND_CAPTURE_PORT,
            TrafficDirection::Inbound,
        );
        let mtls = self.proxy.sds;
        let peer = self.index.peer_mtls(
            &self.g.root_namespace,
            &self.proxy.namespace,
            &self.proxy.labels,
        );
        if mtls {
            l.listener_filters.push(listeners::tls_inspector());
        }
        for p in inbound {
            let cluster = inbound_cluster_name(p.port);
            let http = matches!(
                p.protocol,
                Protocol::Http | Protocol::Http2 | Protocol::Grpc
            );
            let filter = if http {
                let rc = RouteConfiguration {
                    name: cluster.clone(),
                    virtual_hosts: vec![VirtualHost {
                        name: format!("inbound|http|{}", p.port),
                        domains: vec!["*".into()],
                        routes: vec![http_route::default_route(&cluster, Vec::new())],
                        ..Default::default()
                    }],
                    validate_clusters: Some(BoolValue { value: false }),
                    ..Default::default()
                };
                listeners::inbound_http_connection_manager(
                    &format!("inbound_0.0.0.0_{}", p.port),
                    Routes::Inline(Box::new(rc)),
                )
            } else {
                listeners::tcp_proxy(&cluster, &[(cluster.clone(), 100)])
            };
            let mode = if mtls {
                peer.for_port(u32::from(p.port))
            } else {
                EffectiveMode::Disable
            };
            if mode != EffectiveMode::Disable {
                let mut m = listeners::match_port(p.port);
                if mode == EffectiveMode::Permissive {
                    m.transport_protocol = "tls".into();
                    m.application_protocols = mtls::SERVER_MATCH_ALPN
                        .iter()
                        .map(|a| a.to_string())
                        .collect();
                }
                let mut chain =
                    listeners::chain(&format!("{cluster}mtls"), Some(m), vec![filter.clone()]);
                chain.transport_socket = Some(mtls::server_socket(http));
                l.filter_chains.push(chain);
            }
            if mode != EffectiveMode::Strict {
                l.filter_chains.push(listeners::chain(
                    &cluster,
                    Some(listeners::match_port(p.port)),
                    vec![filter],
                ));
            }
        }
        let mut passthrough = listeners::chain(
            INBOUND_PASSTHROUGH,
            None,
            vec![listeners::tcp_proxy(
                INBOUND_PASSTHROUGH,
                &[(INBOUND_PASSTHROUGH.to_string(), 100)],
            )],
        );
        if mtls && peer.mode == EffectiveMode::Strict {
            passthrough.transport_socket = Some(mtls::server_socket(false));
        }
        l.default_filter_chain = Some(passthrough);
        l
    }

    /// Route table `PORT` of a sidecar: a virtual host per service on the port, routed
    /// by its VirtualService or to the service, and `allow_any` for the rest.
    fn sidecar_route_config(&self, port: u16, services: &[VisibleService]) -> RouteConfiguration {
        let mut seen = BTreeSet::new();
        let mut vhosts = Vec::new();
        for (svc, clusters) in services {
            let host = svc.hostname.as_str();
            let domains: Vec<String> = self
                .domains(svc, clusters, port)
                .into_iter()
                .filter(|d| seen.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let routes = match self.vs_for_host(host, MESH_GATEWAY) {
                Some(e) => self.vs_routes(e, port, None),
                None => {
                    let d = Destination {
                        host: host.to_string(),
                        subset: None,
                        port: Some(isthmus_model::istio::common::PortSelector {
                            number: Some(u32::from(port)),
                        }),
                    };
                    vec![http_route::default_route(
                        &outbound_cluster_name(port, "", host),
                        self.hash_for(&d, svc.namespace(), port),
                    )]
                }
            };
            vhosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes,
                ..Default::default()
            });
        }
        vhosts.push(self.catch_all_vhost());
        RouteConfiguration {
            name: port.to_string(),
            virtual_hosts: vhosts,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        }
    }

    /// Unknown hosts: passed through (ALLOW_ANY) or answered 502 (REGISTRY_ONLY).
    fn catch_all_vhost(&self) -> VirtualHost {
        let action = match self.g.outbound_policy {
            OutboundPolicy::AllowAny => Action::Route(
                envoy_types::pb::envoy::config::route::v3::RouteAction {
                    cluster_specifier: Some(
                        envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(
                            PASSTHROUGH.into(),
                        ),
                    ),
                    timeout: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: 0,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ),
            OutboundPolicy::RegistryOnly => Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        };
        let name = match self.g.outbound_policy {
            OutboundPolicy::AllowAny => "allow_any",
            OutboundPolicy::RegistryOnly => "block_all",
        };
        VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: name.into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(action),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}
