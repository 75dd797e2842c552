#![allow(clippy::print_stderr)]
//! A live source: files edited, added and removed under a watched directory reach the
//! registry as change events.

use std::fs;
use std::time::{Duration, Instant};

use isthmus_model::MeshConfig;
use isthmus_registry::{ChangeEvent, Controller};

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: NAME\n  namespace: default\nspec:\n  selector: {app: NAME}\n  ports: [{name: http, port: 80}]\n";

fn pod(app: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-1\n  namespace: default\n  labels: {{app: {app}}}\nstatus:\n  podIP: {ip}\n"
    )
}

async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<ChangeEvent>>,
) -> (ChangeEvent, Duration) {
    let t = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("channel open");
    ((*ev).clone(), t.elapsed())
}

fn hosts(ev: &ChangeEvent) -> Vec<String> {
    ev.services.keys().map(|h| h.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_additions_and_removals_become_exact_events() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = dir.path().join("c1");
    fs::create_dir_all(c1.join("apps")).unwrap();
    fs::write(
        dir.path().join("mesh.yaml"),
        "clusters:\n- name: c1\n  source: {manifests: c1}\n",
    )
    .unwrap();
    fs::write(
        c1.join("apps/web.yaml"),
        format!(
            "{}---\n{}",
            SVC.replace("NAME", "web"),
            pod("web", "198.18.0.1")
        ),
    )
    .unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    let ctl = Controller::start(&mesh);
    assert!(ctl.ready());
    assert_eq!(
        ctl.snapshot()
            .service("web.default.svc.cluster.local")
            .unwrap()
            .endpoints()
            .count(),
        1
    );
    let mut rx = ctl.subscribe();
    let mut latencies = Vec::new();

    // Edit: the pod moves.
    fs::write(
        c1.join("apps/web.yaml"),
        format!(
            "{}---\n{}",
            SVC.replace("NAME", "web"),
            pod("web", "198.18.0.2")
        ),
    )
    .unwrap();
    let (ev, took) = next_event(&mut rx).await;
    latencies.push(took);
    assert_eq!(hosts(&ev), ["web.default.svc.cluster.local"]);
    assert_eq!(
        ev.services
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["c1"]
    );
    let ep = ctl
        .snapshot()
        .service("web.default.svc.cluster.local")
        .unwrap()
        .endpoints()
        .next()
        .unwrap()
        .address
        .to_string();
    assert_eq!(ep, "198.18.0.2");

    // Add: a new file in a new subdirectory.
    fs::create_dir_all(c1.join("more")).unwrap();
    fs::write(c1.join("more/api.yaml"), SVC.replace("NAME", "api")).unwrap();
    let (ev, took) = next_event(&mut rx).await;
    latencies.push(took);
    assert_eq!(hosts(&ev), ["api.default.svc.cluster.local"]);

    // A file that changes nothing a proxy sees: no event.
    fs::write(
        c1.join("more/api.yaml"),
        format!("# a comment\n{}", SVC.replace("NAME", "api")),
    )
    .unwrap();
    // The watch reads a written file within milliseconds; nothing may come of it.
    let quiet = Duration::from_millis(500);
    if let Ok(ev) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("a comment-only edit emitted an event within {quiet:?}: {ev:?}");
    }
    // Remove: the service goes.
    fs::remove_file(c1.join("more/api.yaml")).unwrap();
    let (ev, took) = next_event(&mut rx).await;
    latencies.push(took);
    assert_eq!(
        hosts(&ev),
        ["api.default.svc.cluster.local"],
        "the comment-only edit emitted nothing before the removal"
    );
    assert!(
        ctl.snapshot()
            .service("api.default.svc.cluster.local")
            .is_none()
    );

    // Editor-style replace (write elsewhere, rename over).
    let tmp = dir.path().join("web.tmp");
    fs::write(
        &tmp,
        format!(
            "{}---\n{}",
            SVC.replace("NAME", "web"),
            pod("web", "198.18.0.3")
        ),
    )
    .unwrap();
    fs::rename(&tmp, c1.join("apps/web.yaml")).unwrap();
    let (ev, took) = next_event(&mut rx).await;
    latencies.push(took);
    assert_eq!(hosts(&ev), ["web.default.svc.cluster.local"]);
    eprintln!("file change → event latencies: {latencies:?}");
}
