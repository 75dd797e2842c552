//! Real Envoy on loopback, fed by `isthmus discovery`: clusters and endpoints arrive
//! over ADS (State-of-the-World and Delta), an endpoint change reaches Envoy without a
//! restart, and the debug API shows the proxy in sync.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use isthmus_model::MeshConfig;
use isthmus_xds::discovery::{Listeners, serve};
use isthmus_xds::server::PushOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Envoy (the one search, in the test kit), or a reason to skip (never under CI=true).
fn envoy_or_skip() -> Option<PathBuf> {
    isthmus_testkit::require_envoy("xds envoy tests")
}

/// The address Envoy wrote to `--admin-address-path` once its admin listener is bound
/// (the bootstrap asks for port 0, so no port is chosen before Envoy binds it).
async fn admin_address(path: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = isthmus_testkit::read_admin_address(path) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy wrote no admin address to {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills Envoy when the test ends, passing or failing.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(body.to_string());
    }
    // De-chunk: SIZE\r\nDATA\r\n … 0\r\n\r\n
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    Some(out)
}

/// Waits up to 30 s for `f` to hold; on a time-out, fails with what `seen` shows then.
async fn wait_for(
    what: &str,
    mut f: impl AsyncFnMut() -> bool,
    seen: impl AsyncFnOnce() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}; at that time:\n{}",
        seen().await
    );
}

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  labels: {{app: reviews, version: v1}}\nstatus:\n  podIP: {ip}\n"
    )
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\n";

async fn envoy_gets_clusters_and_endpoints(api_type: &str) {
    let Some(envoy) = envoy_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("c1")).unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "clusters:\n- name: c1\n  network: n1\n  source: {manifests: c1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c1/app.yaml"),
        format!("{SVC}{}", pod("reviews-1", "198.18.0.1")),
    )
    .unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    // Listeners bound here and handed over: no port is free for someone else in between.
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        debug: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        secure: None,
    };
    let grpc = listeners.grpc.local_addr().unwrap().port();
    let debug_addr = listeners.debug.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let discovery = tokio::spawn(serve(mesh, listeners, PushOptions::default(), async move {
        let _ = stop_rx.await;
    }));

    let node_id = "sidecar~127.0.0.1~productpage-v1-abc.bookinfo~bookinfo.svc.cluster.local";
    let bootstrap = serde_json::json!({
        "node": {"id": node_id, "cluster": "productpage.bookinfo", "metadata": {"CLUSTER_ID": "c1", "NETWORK": "n1", "NAMESPACE": "bookinfo"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {"api_type": api_type, "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}], "set_node_on_first_message_only": true},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": grpc}}}}]}]}
        }]}
    });
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let admin_path = dir.path().join("admin-address");
    let envoy_proc = Proc(
        Command::new(&envoy)
            .args([
                "-c",
                path.to_str().unwrap(),
                "--disable-hot-restart",
                "--admin-address-path",
                admin_path.to_str().unwrap(),
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Envoy starts"),
    );
    let admin_addr = admin_address(&admin_path).await;
    // What Envoy and the control plane hold, for a failure's message.
    let seen = async || {
        format!(
            "Envoy /clusters:\n{}\n/debug/syncz:\n{}",
            http_get(admin_addr, "/clusters").await.unwrap_or_default(),
            http_get(debug_addr, "/debug/syncz")
                .await
                .unwrap_or_default()
        )
    };

    wait_for(
        "Envoy to get the reviews cluster and its endpoint over ADS",
        async || {
            http_get(admin_addr, "/clusters").await.is_some_and(|c| {
                c.contains("outbound|9080||reviews.bookinfo.svc.cluster.local::198.18.0.1:9080")
            })
        },
        seen,
    )
    .await;

    // An endpoint change in the watched directory reaches Envoy without a restart.
    std::fs::write(
        dir.path().join("c1/app.yaml"),
        format!(
            "{SVC}{}---\n{}",
            pod("reviews-1", "198.18.0.1"),
            pod("reviews-2", "198.18.0.2")
        ),
    )
    .unwrap();
    wait_for(
        "the new endpoint in Envoy",
        async || {
            http_get(admin_addr, "/clusters").await.is_some_and(|c| {
                c.contains("outbound|9080||reviews.bookinfo.svc.cluster.local::198.18.0.2:9080")
            })
        },
        seen,
    )
    .await;

    // The debug API shows the proxy, in sync: what was sent is what Envoy accepted.
    wait_for(
        "CDS and EDS acknowledged in /debug/syncz",
        async || {
            let Some(body) = http_get(debug_addr, "/debug/syncz").await else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                return false;
            };
            v.as_array().into_iter().flatten().any(|c| {
                c["proxy"]["id"] == node_id
                    && ["cds", "eds"].iter().all(|t| {
                        !c["types"][t]["sentVersion"].is_null()
                            && c["types"][t]["sentVersion"] == c["types"][t]["ackedVersion"]
                    })
            })
        },
        seen,
    )
    .await;
    // The proxy holds the new endpoint, accepted; once the pod is gone from the
    // registry and Envoy accepts the change, nothing holds it.
    let endpointz = async || {
        let body = http_get(debug_addr, "/debug/endpointz?address=198.18.0.2").await?;
        serde_json::from_str::<serde_json::Value>(&body).ok()
    };
    wait_for(
        "Envoy to accept the endpoint, in /debug/endpointz",
        async || {
            endpointz().await.is_some_and(|v| {
                v["registry"] == true
                    && v["proxies"] == serde_json::json!([{"id": node_id, "acked": true}])
            })
        },
        seen,
    )
    .await;
    std::fs::write(
        dir.path().join("c1/app.yaml"),
        format!("{SVC}{}", pod("reviews-1", "198.18.0.1")),
    )
    .unwrap();
    wait_for(
        "no holder of the removed endpoint in /debug/endpointz",
        async || {
            endpointz()
                .await
                .is_some_and(|v| v["registry"] == false && v["proxies"] == serde_json::json!([]))
        },
        seen,
    )
    .await;
    let bad = http_get(debug_addr, "/debug/endpointz?address=pod-1")
        .await
        .unwrap_or_default();
    assert!(bad.contains("not an IP address"), "{bad}");

    let ready = http_get(debug_addr, "/ready").await.unwrap_or_default();
    assert!(ready.starts_with("ready"), "{ready}");
    let dump = http_get(debug_addr, &format!("/debug/config_dump?proxyID={node_id}"))
        .await
        .unwrap_or_default();
    assert!(
        dump.contains("outbound|9080||reviews.bookinfo.svc.cluster.local"),
        "{dump}"
    );

    // Envoy goes first: a graceful shutdown waits for its stream to end.
    drop(envoy_proc);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), discovery).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_state_of_the_world_ads() {
    envoy_gets_clusters_and_endpoints("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_delta_ads() {
    envoy_gets_clusters_and_endpoints("DELTA_GRPC").await;
}
