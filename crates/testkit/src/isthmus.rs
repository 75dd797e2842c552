//! Starting isthmus's own processes in a [`Netns`]: the control plane
//! (`isthmus discovery`), agents with Envoy (`isthmus agent`) and sample apps
//! (`isthmus app echo`), and a mesh directory whose manifests a test applies and
//! removes like `kubectl apply` / `kubectl delete`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::curl::Curl;
use crate::netns::{Netns, Pid};

/// A mesh of one cluster read from a manifests directory.
pub struct Mesh {
    file: PathBuf,
    manifests: PathBuf,
}

impl Mesh {
    /// Writes `DIR/mesh.yaml` for one cluster, and makes its manifests directory
    /// `DIR/CLUSTER`.
    pub fn new(dir: &Path, cluster: &str, network: &str) -> io::Result<Mesh> {
        let manifests = dir.join(cluster);
        std::fs::create_dir_all(&manifests)?;
        let file = dir.join("mesh.yaml");
        std::fs::write(
            &file,
            format!(
                "meshID: mesh1\nclusters:\n- name: {cluster}\n  network: {network}\n  source:\n    manifests: {cluster}\n"
            ),
        )?;
        Ok(Mesh { file, manifests })
    }

    /// `mesh.yaml`.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    /// Writes (or replaces) manifest `name` at once: a hidden temporary file renamed
    /// into place, so the watcher never reads half a file.
    pub fn apply(&self, name: &str, yaml: &str) -> io::Result<()> {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, self.manifests.join(name))
    }

    /// Applies a copy of `src` under its own file name.
    pub fn apply_file(&self, src: &Path) -> io::Result<()> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("{} has no file name", src.display())))?;
        let yaml = std::fs::read_to_string(src)
            .map_err(|e| io::Error::other(format!("cannot read {}: {e}", src.display())))?;
        self.apply(name, &yaml)
    }

    /// Deletes manifest `name` (a file [`Mesh::apply`] or [`Mesh::apply_file`] wrote).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.manifests.join(name))
    }
}

/// `isthmus discovery` in `ns`; its log is `discovery.log`.
pub fn start_discovery(
    ns: &Netns,
    isthmus: &Path,
    mesh: &Path,
    grpc: SocketAddr,
    debug: SocketAddr,
) -> io::Result<Pid> {
    let mesh = mesh.to_string_lossy();
    ns.spawn(
        isthmus,
        &[
            "discovery",
            "--mesh",
            &mesh,
            "--grpc-address",
            &grpc.to_string(),
            "--debug-address",
            &debug.to_string(),
        ],
        &[],
        "discovery.log",
    )
}

/// Waits until `GET URL` answers 200 (`/ready`, `/healthz/ready`, …).
#[track_caller]
pub fn wait_ok(ns: &Netns, what: &str, url: &str, timeout: Duration) {
    let req = Curl::get(url).timeout(Duration::from_secs(1));
    ns.wait_until(what, timeout, || {
        let r = req.send_one(ns);
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });
}

/// An `isthmus agent` (a sidecar, or with `router` a gateway) and its Envoy.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub router: bool,
    pub pod: String,
    pub namespace: String,
    /// `k=v,k=v`.
    pub labels: String,
    pub node_ip: IpAddr,
    pub admin: SocketAddr,
    pub readiness_port: u16,
    pub discovery: SocketAddr,
    pub cluster_id: String,
    pub network: String,
    pub envoy: PathBuf,
}

impl AgentSpec {
    /// The node id Envoy presents (`sidecar~IP~POD.NS~NS.svc.cluster.local`), the
    /// `proxyID` of the control plane's `/debug/config_dump`.
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            if self.router { "router" } else { "sidecar" },
            self.node_ip,
            self.pod,
            self.namespace,
            self.namespace
        )
    }

    /// `http://127.0.0.1:PORT/healthz/ready`.
    pub fn readiness_url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz/ready", self.readiness_port)
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["agent".to_string()];
        if self.router {
            args.push("--router".into());
        }
        for (flag, value) in [
            ("--envoy", self.envoy.to_string_lossy().into_owned()),
            ("--discovery-address", self.discovery.to_string()),
            ("--admin-address", self.admin.to_string()),
            ("--readiness-port", self.readiness_port.to_string()),
            ("--node-ip", self.node_ip.to_string()),
            ("--pod-name", self.pod.clone()),
            ("--namespace", self.namespace.clone()),
            ("--labels", self.labels.clone()),
            ("--cluster-id", self.cluster_id.clone()),
            ("--network", self.network.clone()),
            ("--drain-seconds", "1".into()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args
    }

    /// Starts the agent in `ns`; its log (with Envoy's output) is `agent-POD.log`.
    pub fn start(&self, ns: &Netns, isthmus: &Path) -> io::Result<Pid> {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn(isthmus, &args, &[], format!("agent-{}.log", self.pod))
    }
}

/// The Envoy an agent runs (its child named `envoy`), if any.
pub fn envoy_pid(agent: Pid) -> Option<Pid> {
    crate::netns::children(agent)
        .into_iter()
        .find(|(_, comm)| comm == "envoy")
        .map(|(p, _)| p)
}

/// One `isthmus app echo` workload.
#[derive(Clone, Debug)]
pub struct EchoSpec {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub cluster: String,
    pub listen: Vec<SocketAddr>,
}

impl EchoSpec {
    /// Starts it in `ns`; its log is `echo-POD.log`.
    pub fn start(&self, ns: &Netns, isthmus: &Path) -> io::Result<Pid> {
        let mut args = vec![
            "app".to_string(),
            "echo".into(),
            "--service".into(),
            self.service.clone(),
            "--version".into(),
            self.version.clone(),
            "--pod".into(),
            self.pod.clone(),
            "--cluster".into(),
            self.cluster.clone(),
        ];
        for l in &self.listen {
            args.extend(["--listen".into(), l.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn(isthmus, &args, &[], format!("echo-{}.log", self.pod))
    }
}

/// `GET URL` as JSON, from inside `ns`.
pub fn get_json(ns: &Netns, url: &str) -> Result<serde_json::Value, String> {
    let r = Curl::get(url).send_one(ns);
    if r.status != 200 {
        return Err(r.to_string());
    }
    serde_json::from_str(&r.body).map_err(|e| format!("{url}: not JSON ({e}): {}", r.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_apply_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = Mesh::new(dir.path(), "cluster1", "network1").unwrap();
        let text = std::fs::read_to_string(mesh.file()).unwrap();
        assert!(text.contains("manifests: cluster1"), "{text}");
        mesh.apply("a.yaml", "x: 1\n").unwrap();
        mesh.apply("a.yaml", "x: 2\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(mesh.manifests())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.yaml"]);
        assert_eq!(
            std::fs::read_to_string(mesh.manifests().join("a.yaml")).unwrap(),
            "x: 2\n"
        );
        mesh.remove("a.yaml").unwrap();
        assert!(mesh.remove("a.yaml").is_err());
    }

    #[test]
    fn agent_args_and_node_id() {
        let spec = AgentSpec {
            router: true,
            pod: "istio-ingressgateway-1".into(),
            namespace: "istio-system".into(),
            labels: "istio=ingressgateway".into(),
            node_ip: "127.0.0.3".parse().unwrap(),
            admin: "127.0.0.1:15100".parse().unwrap(),
            readiness_port: 15121,
            discovery: "127.0.0.1:15010".parse().unwrap(),
            cluster_id: "cluster1".into(),
            network: "network1".into(),
            envoy: "/bin/envoy".into(),
        };
        assert_eq!(
            spec.node_id(),
            "router~127.0.0.3~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local"
        );
        let args = spec.args().join(" ");
        assert!(
            args.starts_with("agent --router --envoy /bin/envoy "),
            "{args}"
        );
        assert!(args.contains("--admin-address 127.0.0.1:15100"), "{args}");
    }
}
