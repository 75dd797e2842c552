//! [`Capture`]: Istio's sidecar traffic capture (istio-iptables, REDIRECT mode) as one
//! `iptables-restore` batch for a pod's network namespace.

use std::fmt::Write;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Envoy's outbound capture port (`ISTIO_REDIRECT`).
pub const OUTBOUND_PORT: u16 = 15001;
/// Envoy's inbound capture port (`ISTIO_IN_REDIRECT`).
pub const INBOUND_PORT: u16 = 15006;
/// The HBONE tunnel port, never captured inbound.
pub const TUNNEL_PORT: u16 = 15008;

/// Istio's iptables capture in a pod: inbound TCP to Envoy's 15006, outbound TCP to
/// its 15001, except the proxy's own traffic (by uid and gid) and what is excluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The uid (and gid) Envoy runs as; its traffic is not captured (Istio: 1337).
    pub proxy_uid: u32,
    /// Inbound ports not captured (Istio's injector: 15090, 15021, 15020).
    pub inbound_exclude_ports: Vec<u16>,
    /// Outbound destinations not captured.
    pub outbound_exclude_cidrs: Vec<Ipv4Net>,
}

impl Capture {
    /// Istio's defaults for a sidecar running as `proxy_uid`: Prometheus (15090),
    /// health (15021) and the agent's merged metrics (15020) are not captured inbound.
    pub fn istio(proxy_uid: u32) -> Capture {
        Capture {
            proxy_uid,
            inbound_exclude_ports: vec![15090, 15021, 15020],
            outbound_exclude_cidrs: Vec::new(),
        }
    }

    /// The rules as `iptables-restore` input for the `nat` table; what `istio-iptables`
    /// installs with `-p 15001 -z 15006 -u UID -g UID -m REDIRECT -i '*' -b '*'
    /// -d PORTS -x CIDRS`.
    pub fn iptables_restore_input(&self) -> String {
        let uid = self.proxy_uid;
        let mut r = String::from("*nat\n");
        for chain in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            let _ = writeln!(r, ":{chain} ACCEPT [0:0]");
        }
        for chain in [
            "ISTIO_INBOUND",
            "ISTIO_IN_REDIRECT",
            "ISTIO_OUTPUT",
            "ISTIO_REDIRECT",
        ] {
            let _ = writeln!(r, ":{chain} - [0:0]");
        }
        let mut rule = |s: String| {
            r.push_str(&s);
            r.push('\n');
        };
        rule(format!(
            "-A ISTIO_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN"
        ));
        rule(format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
        ));
        rule(format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
        ));
        // Inbound: every port but the excluded ones.
        rule("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
        let mut seen = vec![TUNNEL_PORT];
        for &port in &self.inbound_exclude_ports {
            if !seen.contains(&port) {
                seen.push(port);
                rule(format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"));
            }
        }
        rule("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
        // Outbound.
        rule("-A OUTPUT -j ISTIO_OUTPUT".into());
        // Envoy's inbound passthrough connects to the app from 127.0.0.6.
        rule("-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN".into());
        for owner in ["--uid-owner", "--gid-owner"] {
            // App → its own service VIP → Envoy (client) → pod IP over lo: back
            // through Envoy's inbound side.
            rule(format!(
                "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {TUNNEL_PORT} \
                 -m owner {owner} {uid} -j ISTIO_IN_REDIRECT"
            ));
            // App → itself over lo: not captured.
            rule(format!(
                "-A ISTIO_OUTPUT -o lo -m owner ! {owner} {uid} -j RETURN"
            ));
            // Envoy's own traffic: never back into Envoy.
            rule(format!("-A ISTIO_OUTPUT -m owner {owner} {uid} -j RETURN"));
        }
        rule("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
        for cidr in &self.outbound_exclude_cidrs {
            rule(format!("-A ISTIO_OUTPUT -d {cidr} -j RETURN"));
        }
        rule("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
        r.push_str("COMMIT\n");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_istios_redirect_mode() {
        let capture = Capture {
            outbound_exclude_cidrs: vec!["198.18.255.0/24".parse().unwrap()],
            ..Capture::istio(1337)
        };
        let rules = capture.iptables_restore_input();
        let expected = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 198.18.255.0/24 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(rules, expected);
    }

    #[test]
    fn the_tunnel_port_and_duplicates_are_excluded_once() {
        let capture = Capture {
            inbound_exclude_ports: vec![15008, 22, 22],
            ..Capture::istio(7)
        };
        let rules = capture.iptables_restore_input();
        assert_eq!(rules.matches("--dport 15008 -j RETURN").count(), 1);
        assert_eq!(rules.matches("--dport 22 -j RETURN").count(), 1);
    }
}
