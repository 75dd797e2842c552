//! Gateway listeners and routes: for the servers of the Gateways that select a router,
//! HTTP and HTTPS (SIMPLE/MUTUAL, certificates from `credentialName` Secrets or files)
//! with route tables of the bound VirtualServices, TLS PASSTHROUGH by SNI, and TCP.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::BoolValue;
use isthmus_model::istio::gateway::{Server, ServerTlsMode};
use isthmus_model::istio::refs::{hosts_overlap, port_matches, split_namespaced_host};
use isthmus_model::{Kind, Object, ObjectKey, Protocol, intern};

use super::context::Gen;
use super::index::VsEntry;
use super::listeners::{self, CertSource, Routes};

impl Gen<'_> {
    /// A router's listeners and route tables, from the Gateways that select it.
    pub(super) fn gateway(&self) -> (Vec<Listener>, Vec<RouteConfiguration>) {
        // Servers by port, with their Gateway.
        let mut by_port: BTreeMap<u16, Vec<(&ObjectKey, &Server)>> = BTreeMap::new();
        for (key, gw) in self.index.gateways_for(&self.proxy.labels) {
            for s in &gw.spec.servers {
                if let Ok(port) = u16::try_from(s.port.number) {
                    by_port.entry(port).or_default().push((key, s));
                }
            }
        }
        let mut listeners_out = Vec::new();
        let mut routes = Vec::new();
        for (port, servers) in by_port {
            let name = format!("0.0.0.0_{port}");
            let mut chains = Vec::new();
            let mut needs_inspector = false;
            let mut plain_http: Vec<(&ObjectKey, &Server)> = Vec::new();
            for (key, server) in &servers {
                let protocol = Protocol::parse(&server.port.protocol).unwrap_or(Protocol::Tcp);
                let tls_mode = server.tls.as_ref().and_then(|t| t.mode);
                match protocol {
                    Protocol::Http | Protocol::Http2 | Protocol::Grpc => {
                        plain_http.push((key, server))
                    }
                    Protocol::Https | Protocol::Tls
                        if matches!(
                            tls_mode,
                            Some(
                                ServerTlsMode::Simple
                                    | ServerTlsMode::Mutual
                                    | ServerTlsMode::OptionalMutual
                            )
                        ) && protocol == Protocol::Https =>
                    {
                        needs_inspector = true;
                        let Some(certs) = self.server_certs(key, server) else {
                            continue;
                        };
                        let rds = format!(
                            "https.{port}.{}.{}.{}",
                            server.name.clone().unwrap_or_else(|| "https".into()),
                            key.name,
                            key.namespace
                        );
                        let mut c = listeners::chain(
                            &rds,
                            Some(listeners::match_sni(sni_names(&server.hosts))),
                            vec![listeners::http_connection_manager(
                                &format!("outbound_0.0.0.0_{port}"),
                                Routes::Rds(rds.clone()),
                                true,
                            )],
                        );
                        c.transport_socket = Some(listeners::downstream_tls(
                            certs,
                            tls_mode == Some(ServerTlsMode::Mutual),
                            &["h2", "http/1.1"],
                        ));
                        chains.push(c);
                        routes.push(self.gateway_route_config(&rds, port, &[(key, server)]));
                    }
                    Protocol::Https | Protocol::Tls => {
                        // PASSTHROUGH (and anything else): route by SNI to the
                        // VirtualServices' tls rules.
                        needs_inspector = true;
                        chains.extend(self.passthrough_chains(key, server, port));
                    }
                    _ => {
                        let gw = gateway_name(key);
                        let dests = self
                            .index
                            .bound_to(&gw, &self.proxy.namespace)
                            .filter(|e| server_allows(server, key, e))
                            .find_map(|e| self.tcp_destinations(e, port, Some(&gw)));
                        if let Some(dests) = dests {
                            chains.push(listeners::chain(
                                &name,
                                None,
                                vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                            ));
                        }
                    }
                }
            }
            if !plain_http.is_empty() {
                let rds = format!("http.{port}");
                chains.push(listeners::chain(
                    &rds,
                    None,
                    vec![listeners::http_connection_manager(
                        &format!("outbound_0.0.0.0_{port}"),
                        Routes::Rds(rds.clone()),
                        true,
                    )],
                ));
                routes.push(self.gateway_route_config(&rds, port, &plain_http));
            }
            if chains.is_empty() {
                tracing::warn!(proxy = %self.proxy.id, port, "no server on this port has anything to serve; no listener");
                continue;
            }
            let mut l = listeners::listener(
                &name,
                "0.0.0.0",
                port,
                true,
                TrafficDirection::Outbound,
                chains,
            );
            if needs_inspector {
                l.listener_filters = vec![listeners::tls_inspector()];
            }
            listeners_out.push(l);
        }
        (listeners_out, routes)
    }

    /// A gateway route table: virtual hosts for the hosts of VirtualServices bound to
    /// these servers' Gateways, rules of several VirtualServices for one host merged in
    /// precedence order.
    fn gateway_route_config(
        &self,
        name: &str,
        port: u16,
        servers: &[(&ObjectKey, &Server)],
    ) -> RouteConfiguration {
        let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
        let mut https_redirect = BTreeSet::new();
        for (key, server) in servers {
            let gw = gateway_name(key);
            let redirect = server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true);
            for e in self.index.bound_to(&gw, &self.proxy.namespace) {
                if !server_allows(server, key, e) {
                    continue;
                }
                let routes = self.vs_routes(e, port, Some(&gw));
                // Istio's `buildGatewayHTTPRouteConfig` (pilot/pkg/networking/core/
                // gateway.go) skips a VirtualService without routes for this gateway
                // (`BuildHTTPRoutesForVirtualService`: "no routes matched") rather than
                // giving its hosts empty virtual hosts.
                if routes.is_empty() {
                    continue;
                }
                for host in &e.hosts {
                    if !server_hosts(server, key).any(|(_, h)| hosts_overlap(h, host)) {
                        continue;
                    }
                    let vh = vhosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                        name: format!("{host}:{port}"),
                        domains: vec![host.clone()],
                        ..Default::default()
                    });
                    vh.routes.extend(routes.iter().cloned());
                    if redirect {
                        https_redirect.insert(host.clone());
                    }
                }
            }
        }
        let virtual_hosts = vhosts
            .into_iter()
            .map(|(host, mut vh)| {
                if https_redirect.contains(&host) {
                    vh.require_tls = TlsRequirementType::All as i32;
                }
                vh
            })
            .collect();
        RouteConfiguration {
            name: name.to_string(),
            virtual_hosts,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        }
    }

    /// Filter chains of a TLS PASSTHROUGH server: one per SNI of the bound
    /// VirtualServices' tls rules.
    fn passthrough_chains(&self, key: &ObjectKey, server: &Server, port: u16) -> Vec<FilterChain> {
        let gw = gateway_name(key);
        let source = self.source(Some(&gw));
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for e in self.index.bound_to(&gw, &self.proxy.namespace) {
            if !server_allows(server, key, e) {
                continue;
            }
            let ns = &e.key.namespace;
            for r in &e.vs.tls {
                for m in &r.r#match {
                    if !port_matches(m.port, port) || !source.matches_l4(m.into(), ns) {
                        continue;
                    }
                    let snis: Vec<String> = m
                        .sni_hosts
                        .iter()
                        .filter(|s| server_hosts(server, key).any(|(_, h)| hosts_overlap(h, s)))
                        .filter(|s| seen.insert((*s).clone()))
                        .cloned()
                        .collect();
                    if snis.is_empty() {
                        continue;
                    }
                    let dests = self.weighted(&r.route, ns, port);
                    if dests.is_empty() {
                        continue;
                    }
                    out.push(listeners::chain(
                        &format!("{gw}|{}", snis.join(",")),
                        Some(listeners::match_sni(snis)),
                        vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                    ));
                }
            }
        }
        out
    }

    /// A server's certificate: files, or the `credentialName` Secret in the gateway's
    /// namespace and cluster (`tls.crt`/`tls.key`/`ca.crt`, or `cert`/`key`/`cacert`).
    fn server_certs(&self, key: &ObjectKey, server: &Server) -> Option<CertSource> {
        let tls = server.tls.as_ref()?;
        if let Some(cred) = tls
            .credential_name
            .as_deref()
            .or(tls.credential_names.first().map(String::as_str))
        {
            let skey = ObjectKey {
                kind: Kind::Secret,
                namespace: intern(&self.proxy.namespace),
                name: intern(cred),
            };
            let Some(obj) = self
                .snapshot
                .secrets
                .get(&(self.proxy.cluster.clone(), skey))
            else {
                tracing::warn!(gateway = %gateway_name(key), credential = cred, namespace = %self.proxy.namespace, cluster = %self.proxy.cluster, "credentialName names no Secret in the gateway's namespace; the server is skipped until it exists");
                return None;
            };
            let Object::Secret(secret) = &**obj else {
                return None;
            };
            let get = |k: &str| -> Option<Vec<u8>> {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(k))
                            .map(|s| s.as_bytes().to_vec())
                    })
            };
            let cert = get("tls.crt").or_else(|| get("cert"));
            let pkey = get("tls.key").or_else(|| get("key"));
            let (Some(cert), Some(pkey)) = (cert, pkey) else {
                tracing::warn!(
                    credential = cred,
                    "Secret has no tls.crt/tls.key (or cert/key); the server is skipped"
                );
                return None;
            };
            return Some(CertSource::Inline {
                cert,
                key: pkey,
                ca: get("ca.crt").or_else(|| get("cacert")),
            });
        }
        match (&tls.server_certificate, &tls.private_key) {
            (Some(c), Some(k)) => Some(CertSource::Files {
                cert: c.clone(),
                key: k.clone(),
                ca: tls.ca_certificates.clone(),
            }),
            _ => {
                tracing::warn!(gateway = %gateway_name(key), "TLS server without credentialName or certificate files; skipped");
                None
            }
        }
    }
}

/// `namespace/name` of the Gateway `key`.
fn gateway_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// A server's hosts as (namespace filter, host): `ns/host`, `./host` (the Gateway's
/// namespace), `*/host` or `host` (any namespace).
fn server_hosts<'a>(
    server: &'a Server,
    key: &'a ObjectKey,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    server
        .hosts
        .iter()
        .map(move |h| match split_namespaced_host(h) {
            (Some("."), host) => (&*key.namespace, host),
            (Some(ns), host) => (ns, host),
            (None, host) => ("*", host),
        })
}

/// Whether a server exposes a VirtualService: a host of the server's (in a namespace
/// the server allows) covers or is covered by a host of the VirtualService.
fn server_allows(server: &Server, key: &ObjectKey, e: &VsEntry) -> bool {
    server_hosts(server, key).any(|(ns, h)| {
        (ns == "*" || ns == &*e.key.namespace) && e.hosts.iter().any(|vh| hosts_overlap(h, vh))
    })
}

/// SNI names for a filter chain match: none (any) when a host is `*`.
fn sni_names(hosts: &[String]) -> Vec<String> {
    let names: Vec<String> = hosts
        .iter()
        .map(|h| split_namespaced_host(h).1.to_string())
        .collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}
