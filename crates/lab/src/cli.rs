//! `isthmus lab …`: the verbs, writing what they report to the writer they are given.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::LabError;
use crate::controller::{DEBUG_PORT, Lab, PodRole, READY_TIMEOUT};
use crate::load::LoadSpec;
use crate::runtime::Runtime;
use crate::topology::Topology;

/// Where a lab lives unless `--dir` or ISTHMUS_LAB_DIR says otherwise.
pub const DEFAULT_DIR: &str = "/run/isthmus-lab";

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring a lab up: networks, control plane, gateways, the topology's manifests;
    /// waits until every pod is ready.
    Up {
        /// A built-in topology (single) or a topology file.
        #[arg(long, default_value = "single")]
        topology: String,
        /// Manifests to apply to the first cluster once it is up (files or directories).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
    },
    /// Create or update objects from files, like `kubectl apply` (Deployments roll).
    Apply {
        cluster: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete the objects of files, like `kubectl delete -f`.
    Delete {
        cluster: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Set a Deployment's replicas, like `kubectl scale`.
    Scale {
        cluster: String,
        /// NAMESPACE/DEPLOYMENT (namespace default if omitted).
        deployment: String,
        #[arg(long)]
        replicas: u32,
    },
    /// Run a command in a pod's network namespace (by pod name or Deployment name).
    Exec {
        cluster: String,
        /// NAMESPACE/POD or NAMESPACE/DEPLOYMENT (namespace default if omitted).
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Clusters, pods with addresses, readiness (checked: a pod with a process that is
    /// not running is not ready), restarts, control planes and gateways.
    Status,
    /// A pod's logs: its app container (default), `istio-proxy` (agent and Envoy), or a
    /// container by name.
    Logs {
        cluster: String,
        pod: String,
        #[arg(short = 'c', long = "container")]
        container: Option<String>,
    },
    /// Send bounded HTTP load from a pod (through its sidecar, if it has one), like
    /// `hey`: CONCURRENCY clients, RATE requests per second in all, for DURATION; one
    /// request per connection. Exits 1 if any request got no 2xx answer.
    Load {
        cluster: String,
        /// NAMESPACE/POD or NAMESPACE/DEPLOYMENT to send from.
        pod: String,
        /// http://HOST[:PORT][/PATH], HOST as the pod resolves it (e.g. reviews:9080).
        url: String,
        #[arg(short = 'c', long, default_value_t = 10)]
        concurrency: usize,
        /// Requests per second, over all clients.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// How long one request may take.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything the lab made (namespaces, links, rules, processes, files),
    /// from its recorded state and by name, so also after a crash or kill -9.
    Down,
    /// Run a container's command and start it again whenever it exits, with backoff
    /// (what the lab runs each container under; not for people).
    #[command(hide = true)]
    Supervise {
        /// Where to record the container's process, restarts and last exit.
        #[arg(long)]
        state: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

/// A duration like `5s`, `500ms` or `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    isthmus_model::istio::validate::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 5s or 500ms"))
}

/// The lab directory: `--dir`, else ISTHMUS_LAB_DIR, else /run/isthmus-lab.
pub fn lab_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os("ISTHMUS_LAB_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// Runs a lab verb; returns the process exit code.
pub fn run(cmd: LabCommand, dir: &Path, name: &str, out: &mut dyn Write) -> Result<i32, LabError> {
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    match cmd {
        LabCommand::Up { topology, files } => {
            let started = Instant::now();
            let topology = Topology::load(&topology)?;
            let first = topology.clusters[0].name.clone();
            let mut lab = Lab::open(dir, name)?;
            lab.up(topology, &mut |m| w(out, format!("==> {m}")))?;
            if !files.is_empty() {
                w(
                    out,
                    format!(
                        "==> applying {} to {first}",
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                let r = lab.apply_paths(&first, None, &files, true)?;
                print_report(out, &r);
                lab.wait_ready(READY_TIMEOUT)?;
            }
            w(
                out,
                format!("==> up in {:.1} s", started.elapsed().as_secs_f64()),
            );
            print_status(&lab, out);
            print_how_to(&lab, out);
            Ok(0)
        }
        LabCommand::Apply {
            cluster,
            namespace,
            files,
        } => {
            let mut lab = Lab::open(dir, name)?;
            let r = lab.apply_paths(&cluster, namespace.as_deref(), &files, true)?;
            print_report(out, &r);
            lab.wait_ready(READY_TIMEOUT)?;
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        LabCommand::Delete {
            cluster,
            namespace,
            files,
        } => {
            let mut lab = Lab::open(dir, name)?;
            let r = lab.delete_paths(&cluster, namespace.as_deref(), &files)?;
            print_report(out, &r);
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        LabCommand::Scale {
            cluster,
            deployment,
            replicas,
        } => {
            let mut lab = Lab::open(dir, name)?;
            let r = lab.scale(&cluster, &deployment, replicas)?;
            print_report(out, &r);
            lab.wait_ready(READY_TIMEOUT)?;
            Ok(0)
        }
        LabCommand::Exec {
            cluster,
            pod,
            command,
        } => {
            let lab = Lab::open_read(dir, name)?;
            let (key, _) = lab.find_pod(&cluster, &pod)?;
            let status = lab.rt.exec(&key, &command)?;
            Ok(status.code().unwrap_or(1))
        }
        LabCommand::Status => {
            let lab = Lab::open_read(dir, name)?;
            print_status(&lab, out);
            Ok(0)
        }
        LabCommand::Logs {
            cluster,
            pod,
            container,
        } => {
            let lab = Lab::open_read(dir, name)?;
            let (key, p) = lab.find_pod(&cluster, &pod)?;
            let container = container.unwrap_or_else(|| match p.role {
                PodRole::ControlPlane => "discovery".into(),
                PodRole::Gateway => "istio-proxy".into(),
                _ => p
                    .containers
                    .first()
                    .map(|c| c.0.clone())
                    .unwrap_or_default(),
            });
            let container = if container == "envoy" || container == "agent" {
                "istio-proxy".to_string()
            } else {
                container
            };
            let path = lab.rt.log_path(&key, &container);
            let text = std::fs::read(&path).map_err(|source| LabError::NoLog {
                pod: key.to_string(),
                path: path.clone(),
                containers: p.process_names(),
                source,
            })?;
            let _ = out.write_all(&text);
            Ok(0)
        }
        LabCommand::Load {
            cluster,
            pod,
            url,
            concurrency,
            rate,
            duration,
            timeout,
            json,
        } => {
            let lab = Lab::open_read(dir, name)?;
            let report = lab.load(
                &cluster,
                &pod,
                &LoadSpec {
                    url,
                    concurrency,
                    rate,
                    duration,
                    timeout,
                },
            )?;
            if json {
                w(
                    out,
                    serde_json::to_string(&report).expect("the report serializes"),
                );
            } else {
                let _ = out.write_all(report.render().as_bytes());
            }
            Ok(if report.failed() == 0 { 0 } else { 1 })
        }
        LabCommand::Down => {
            let report = Runtime::down(dir, name, true)?;
            w(out, format!("{report}"));
            Ok(0)
        }
        LabCommand::Supervise { state, command } => crate::supervise::run(&state, &command),
    }
}

fn print_report(out: &mut dyn Write, r: &crate::controller::ApplyReport) {
    for l in r
        .configured
        .iter()
        .chain(
            &r.pods_started
                .iter()
                .map(|p| format!("pod {p} started"))
                .collect::<Vec<_>>(),
        )
        .chain(
            &r.pods_stopped
                .iter()
                .map(|p| format!("pod {p} stopped"))
                .collect::<Vec<_>>(),
        )
    {
        let _ = writeln!(out, "{l}");
    }
    for p in &r.problems {
        let _ = writeln!(out, "error: {p}");
    }
}

fn print_status(lab: &Lab, out: &mut dyn Write) {
    let rows = lab.status_rows();
    let header = [
        "CLUSTER",
        "POD",
        "IP",
        "ROLE",
        "READY",
        "RESTARTS",
        "PROCESSES",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: [&str; 7]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.each_ref().map(String::as_str)));
    }
}

fn print_how_to(lab: &Lab, out: &mut dyn Write) {
    let Ok(t) = lab.topology() else { return };
    let _ = writeln!(out, "\nHow to call it:");
    for c in &t.clusters {
        if c.ingress_gateway {
            let _ = writeln!(
                out,
                "  isthmus lab exec {} istio-system/istio-ingressgateway -- curl -s http://127.0.0.1:8080/productpage",
                c.name
            );
        }
        if c.control_plane {
            let _ = writeln!(
                out,
                "  isthmus lab exec {} istio-system/istiod -- curl -s http://127.0.0.1:{DEBUG_PORT}/debug/syncz",
                c.name
            );
        }
        let _ = writeln!(
            out,
            "  isthmus lab apply {} -f samples/bookinfo/networking/virtual-service-all-v1.yaml",
            c.name
        );
    }
    let _ = writeln!(
        out,
        "  isthmus lab status | logs CLUSTER NS/POD [-c istio-proxy] | down"
    );
}
