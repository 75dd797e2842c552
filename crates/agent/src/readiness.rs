//! `GET /healthz/ready`: 200 once Envoy is LIVE and has its first clusters (CDS) and
//! listeners (LDS) from the control plane, else 503 saying what is missing.
//!
//! In Istio, port 15021 is a listener in Envoy that routes `/healthz/ready` to
//! pilot-agent; here the agent serves the port itself, so it answers even before Envoy
//! has any listener (and says so), which is what a kubelet probe needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::http;

/// How long one question to Envoy's admin may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Envoy's counters of config updates from the control plane. Like Istio, an update
/// that Envoy rejected still counts as received: the proxy talks to its control plane.
const UPDATE_STATS: &str = "/stats?filter=%5E%28cluster_manager%5C.cds%7Clistener_manager%5C.lds%29%5C.update_%28success%7Crejected%29%24";

/// What the readiness endpoint needs to know.
#[derive(Clone, Debug)]
pub(crate) struct ReadinessState {
    /// The running Envoy's state, for its admin address.
    pub envoy: tokio::sync::watch::Receiver<crate::EnvoyStatus>,
    /// Set when the agent starts shutting down: a draining proxy is not ready.
    pub draining: Arc<AtomicBool>,
    /// The workload certificate, for `/healthz/certificate`.
    pub certs: tokio::sync::watch::Receiver<Option<Arc<crate::identity::WorkloadCertificate>>>,
}

/// Asks Envoy's admin whether the proxy is ready: `Ok(())`, or what is missing.
pub async fn check(admin: SocketAddr) -> Result<(), String> {
    let ready = http::get(admin, "/ready", ADMIN_TIMEOUT)
        .await
        .map_err(|e| format!("Envoy's admin interface at {admin} does not answer: {e}"))?;
    let mut missing = Vec::new();
    let state = ready.body.trim();
    if ready.status != 200 || state != "LIVE" {
        missing.push(format!("Envoy is {state}, not LIVE"));
    }
    let stats = http::get(admin, UPDATE_STATS, ADMIN_TIMEOUT)
        .await
        .map_err(|e| format!("Envoy's admin interface at {admin} does not answer: {e}"))?;
    if stats.status != 200 {
        return Err(format!("Envoy's /stats answered {}", stats.status));
    }
    let (cds, lds) = updates_received(&stats.body);
    if !cds {
        missing.push("no clusters (CDS) from the control plane yet".to_string());
    }
    if !lds {
        missing.push("no listeners (LDS) from the control plane yet".to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Whether the stats text (`name: value` lines) shows a CDS and an LDS update.
fn updates_received(stats: &str) -> (bool, bool) {
    let (mut cds, mut lds) = (false, false);
    for line in stats.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let positive = value.trim().parse::<u64>().is_ok_and(|v| v > 0);
        match name.trim() {
            "cluster_manager.cds.update_success" | "cluster_manager.cds.update_rejected" => {
                cds |= positive
            }
            "listener_manager.lds.update_success" | "listener_manager.lds.update_rejected" => {
                lds |= positive
            }
            _ => {}
        }
    }
    (cds, lds)
}

async fn healthz_ready(State(state): State<ReadinessState>) -> (StatusCode, String) {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the proxy is draining\n".into(),
        );
    }
    let Some(admin) = state.envoy.borrow().admin else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Envoy is (re)starting\n".into(),
        );
    };
    match check(admin).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {missing}\n"),
        ),
    }
}

/// `GET /healthz/certificate`: the workload certificate's identity, serial and
/// validity, and how long until it expires (JSON); 503 while there is none.
async fn healthz_certificate(State(state): State<ReadinessState>) -> (StatusCode, String) {
    let current = state.certs.borrow().clone();
    let Some(cert) = current else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no workload certificate (none requested, or the CA has not answered yet)\n".into(),
        );
    };
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let expires_in = cert
        .not_after
        .duration_since(std::time::SystemTime::now())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = serde_json::json!({
        "identity": cert.identity,
        "serial": cert.serial,
        "notBefore": secs(cert.not_before),
        "notAfter": secs(cert.not_after),
        "expiresInSeconds": expires_in,
        "renewAt": secs(cert.renew_at()),
    });
    (StatusCode::OK, format!("{body}\n"))
}

pub(crate) fn router(state: ReadinessState) -> Router {
    Router::new()
        .route("/healthz/ready", get(healthz_ready))
        .route("/healthz/certificate", get(healthz_certificate))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_counters() {
        let stats = "cluster_manager.cds.update_rejected: 0\ncluster_manager.cds.update_success: 2\nlistener_manager.lds.update_rejected: 0\nlistener_manager.lds.update_success: 0\n";
        assert_eq!(updates_received(stats), (true, false));
        let stats =
            "cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_rejected: 1\n";
        assert_eq!(updates_received(stats), (true, true));
        assert_eq!(updates_received(""), (false, false));
    }

    /// A fake admin interface answers /ready and /stats as told.
    async fn fake_admin(ready: &'static str, stats: &'static str) -> SocketAddr {
        let app = Router::new()
            .route(
                "/ready",
                get(move || async move {
                    let code = if ready == "LIVE" { 200 } else { 503 };
                    (StatusCode::from_u16(code).unwrap(), format!("{ready}\n"))
                }),
            )
            .route("/stats", get(move || async move { stats }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn readiness_needs_live_cds_and_lds() {
        let admin = fake_admin(
            "LIVE",
            "cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_success: 1\n",
        )
        .await;
        assert_eq!(check(admin).await, Ok(()));

        let admin = fake_admin("INITIALIZING", "cluster_manager.cds.update_success: 1\n").await;
        let e = check(admin).await.unwrap_err();
        assert_eq!(
            e,
            "Envoy is INITIALIZING, not LIVE; no listeners (LDS) from the control plane yet"
        );

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = check(closed).await.unwrap_err();
        assert!(e.contains("does not answer"), "{e}");
    }
}
