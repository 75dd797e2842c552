//! `isthmus bench lab`: brings up the `single` topology with bookinfo and its ingress
//! gateway from nothing, times it until every pod is ready, and adds up the memory of
//! every process the lab runs, by kind (Envoy, agent, app stand-in, control plane).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isthmus_lab::controller::READY_TIMEOUT;
use isthmus_lab::runtime::Runtime;
use isthmus_lab::{Lab, LabError, Topology};

/// Resident memory of a process, from /proc/PID/status (kB → bytes).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A process's command name and parent, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(String, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let ppid = s[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// Every process under `root` (itself included).
fn tree(root: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            && let Some((_, ppid)) = stat(pid)
        {
            parents.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(children) = parents.get(&out[i]) {
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// Runs the benchmark in a fresh lab under `dir`; writes figures to `out`.
pub fn run(dir: &Path, manifests: &[PathBuf], out: &mut dyn Write) -> Result<(), LabError> {
    const NAME: &str = "bench";
    let _ = Runtime::down(dir, NAME, true);
    let started = Instant::now();
    let result = (|| -> Result<(), LabError> {
        let mut lab = Lab::open(dir, NAME)?;
        let topology = Topology::load("single")?;
        let first = topology.clusters[0].name.clone();
        lab.up(topology, &mut |_| {})?;
        lab.apply_paths(&first, None, manifests, true)?;
        lab.wait_ready(READY_TIMEOUT)?;
        let ready = started.elapsed();
        // Let start-up allocations settle before reading memory.
        std::thread::sleep(Duration::from_millis(500));
        let mut by_kind: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        let mut pods = 0;
        for pod in lab.rt.pods() {
            pods += 1;
            for p in &pod.processes {
                for pid in tree(p.pid) {
                    let comm = stat(pid).map(|s| s.0).unwrap_or_default();
                    let kind = if p.supervised && pid == p.pid {
                        "supervisors"
                    } else if comm.starts_with("envoy") {
                        "Envoy"
                    } else if p.container == "istio-proxy" {
                        "agent"
                    } else if p.container == "discovery" {
                        "control plane"
                    } else if comm == "setpriv" || comm == "ip" {
                        continue;
                    } else {
                        "app stand-ins"
                    };
                    let e = by_kind.entry(kind).or_default();
                    e.0 += rss(pid);
                    e.1 += 1;
                }
            }
        }
        let total: u64 = by_kind.values().map(|v| v.0).sum();
        let mb = |b: u64| b as f64 / 1_048_576.0;
        let _ = writeln!(
            out,
            "lab up, topology single, bookinfo + ingress gateway ({pods} pods incl. control plane and gateway)"
        );
        let _ = writeln!(
            out,
            "  from nothing to every pod ready: {:.2} s (target < 10 s)",
            ready.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  resident memory of the whole lab: {:.1} MB",
            mb(total)
        );
        for (kind, (bytes, n)) in &by_kind {
            let _ = writeln!(
                out,
                "    {kind:<14} {n:>3} processes  {:>7.1} MB  ({:.1} MB each)",
                mb(*bytes),
                mb(*bytes) / (*n).max(1) as f64
            );
        }
        Ok(())
    })();
    let down = Runtime::down(dir, NAME, true);
    result?;
    down?;
    Ok(())
}
