//! Network namespaces, links, capture rules and processes of the lab, recorded.
//!
//! Every pod is a network namespace `il-<lab>-<n>` with `lo` and an `eth0` (one end of
//! a veth pair) holding the pod's address. The other end of the veth is a port of its
//! cluster's bridge `ilbr<N>`, which lives, with the bridges of the other clusters, in
//! the lab's own network namespace `il-<lab>`; that namespace forwards between its
//! bridges (no NAT), so pods of different clusters reach each other. The host's own
//! network namespace is never changed, no namespace of the lab has a default route,
//! and every lab address comes from [`LAB_RANGE`], so no lab traffic can leave the
//! host.
//!
//! Lab commands are separate processes: a [`Runtime`] records everything it creates
//! in `state.json` in the lab's directory (holding a lock on it meanwhile), and the
//! processes it starts outlive it (each in its own process group, output appended to
//! a log file, kept running by a supervisor when its [`Restart`] says so).
//! [`Runtime::down`] removes everything, from the state and by name, so also after a
//! crash or `kill -9`.
//!
//! Host tools used: `ip` (iproute2), `sysctl` (procps), `iptables-restore` (iptables,
//! for pods with [`Capture`]) and `setpriv` (util-linux, for processes started with
//! a uid); a missing one is named with the package that installs it. Everything
//! needs root.

mod capture;
mod cmd;
mod containers;
mod down;
mod error;
mod procs;
mod state;

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub use capture::{Capture, INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT};
pub use containers::{ContainerStatus, PodNetns, Process, Restart, setpriv_args};
pub use down::DownReport;
pub use error::RuntimeError;
pub use state::{ClusterRecord, ContainerState, PodKey, PodRecord, ProcessRecord};

pub(crate) use containers::unix_now;

use cmd::{IP, IPTABLES_RESTORE, ip, ip_succeeds, is_gone, tool};
use procs::{Targets, Term, netns_id};
use state::State;

/// Every lab address (pods, gateways, services, routes) comes from here: 198.18.0.0/15,
/// reserved for benchmarking (RFC 2544), never routed on the internet.
pub const LAB_RANGE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);

/// Where `ip netns` mounts named network namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";
/// Where `ip netns exec NAME` finds files to bind-mount over `/etc`.
const ETC_NETNS: &str = "/etc/netns";

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// A pod's `/etc/resolv.conf`: no nameserver, so nothing is looked up off the host
/// (glibc then tries 127.0.0.1, inside the pod).
const RESOLV_CONF: &str = "\
# Written by isthmus lab. No nameserver, so that no name is looked up off this host:
# services' and pods' names are in /etc/hosts.
options ndots:1 timeout:1 attempts:1
";

/// The lab's network namespace: `il-<lab>`.
pub fn lab_netns(lab: &str) -> String {
    format!("il-{lab}")
}

/// Whether network namespace (or `/etc/netns` entry) `name` is lab `lab`'s: `il-<lab>`
/// or `il-<lab>-<n>`. Lab names have no `-`, so no other lab's names match.
fn is_lab_netns(name: &str, lab: &str) -> bool {
    let Some(rest) = name.strip_prefix("il-").and_then(|r| r.strip_prefix(lab)) else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

fn etc_netns(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name)
}

/// The names of the host's named network namespaces (what `ip netns list` shows).
fn list_netns() -> Result<Vec<String>, RuntimeError> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuntimeError::io(
                "list network namespaces in",
                NETNS_RUN_DIR,
                e,
            ));
        }
    };
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

fn require_root(what: &str) -> Result<(), RuntimeError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(RuntimeError::NotRoot {
            what: what.to_string(),
        })
    }
}

fn validate_lab(lab: &str) -> Result<(), RuntimeError> {
    let ok = (1..=24).contains(&lab.len())
        && lab
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidLabName(lab.to_string()))
    }
}

/// Names that become path components (logs) and state keys.
fn validate_name(what: &'static str, value: &str) -> Result<(), RuntimeError> {
    let reason = if value.is_empty() || value.len() > 253 {
        Some("use 1 to 253 characters")
    } else if value == "." || value == ".." {
        Some("`.` and `..` are not names")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("use only a-z, A-Z, 0-9, `.`, `_` and `-`")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(RuntimeError::InvalidName {
            what,
            value: value.to_string(),
            reason,
        }),
    }
}

fn validate_key(key: &PodKey) -> Result<(), RuntimeError> {
    validate_name("cluster name", &key.cluster)?;
    validate_name("namespace", &key.namespace)?;
    validate_name("pod name", &key.name)
}

fn check_lab_range(what: &str, net: Ipv4Net) -> Result<(), RuntimeError> {
    if LAB_RANGE.contains(&net) {
        Ok(())
    } else {
        Err(RuntimeError::InvalidNetwork(format!(
            "{what} {net} is outside {LAB_RANGE}: lab addresses must come from it, so that \
             no lab traffic can leave the host"
        )))
    }
}

/// Takes the lab directory's lock, waiting for another lab command that holds it.
fn lock_dir(dir: &Path) -> Result<Flock<File>, RuntimeError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| RuntimeError::io("open lock file", &path, e))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(lock),
        Err((file, Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => {
            return Err(RuntimeError::io("lock", &path, errno.into()));
        }
    };
    tracing::info!(lock = %path.display(), "another lab command is running; waiting for it");
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| RuntimeError::io("lock", &path, errno.into()))
}

/// Rewrites `path` in place (same inode), so that processes that see it through a bind
/// mount (`ip netns exec` mounts `/etc/netns/NAME/hosts` over `/etc/hosts`) see the new
/// content.
fn write_in_place(path: &Path, content: &str) -> Result<(), RuntimeError> {
    let write = || -> std::io::Result<()> {
        let mut f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        f.write_all(content.as_bytes())?;
        f.set_len(content.len() as u64)?;
        f.flush()
    };
    write().map_err(|e| RuntimeError::io("write", path, e))
}

/// A pod's `/etc/hosts`: localhost, then `hosts`.
fn hosts_file(hosts: &str) -> String {
    let mut s = String::from(
        "# Written by isthmus lab; rewritten in place when services change.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    s.push_str(hosts);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The host's `nsswitch.conf` with names looked up in files only (not DNS, mDNS or
/// systemd-resolved, which would ask off the host).
fn nsswitch_files_only(host: &str) -> String {
    let mut out: String = host
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("hosts:") {
                "hosts:          files"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !host.lines().any(|l| l.trim_start().starts_with("hosts:")) {
        out.push_str("\nhosts:          files");
    }
    out.push('\n');
    out
}

/// The lab's namespaces, links and processes, recorded in `<dir>/state.json`. Holds
/// the lab directory's lock while it lives; the processes it starts outlive it.
#[derive(Debug)]
pub struct Runtime {
    dir: PathBuf,
    lab: String,
    state: State,
    /// Held from `open` until dropped, or until [`Runtime::unlock`].
    lock: Option<Flock<File>>,
}

impl Runtime {
    /// Opens (creating) the lab directory `dir` of lab `lab` (1 to 24 of a-z, 0-9) and
    /// loads its state. Waits for any other lab command holding the directory's lock,
    /// and holds it until dropped.
    pub fn open(dir: &Path, lab: &str) -> Result<Runtime, RuntimeError> {
        validate_lab(lab)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| RuntimeError::io("create lab directory", dir, e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| RuntimeError::io("open lab directory", dir, e))?;
        let lock = lock_dir(&dir)?;
        let state = match State::load(&dir.join(STATE_FILE))? {
            Some(state) if state.lab != lab => {
                return Err(RuntimeError::OtherLab {
                    dir,
                    found: state.lab,
                    wanted: lab.to_string(),
                });
            }
            Some(state) => state,
            None => State::new(lab),
        };
        Ok(Runtime {
            dir,
            lab: lab.to_string(),
            state,
            lock: Some(lock),
        })
    }

    /// Lets other lab commands in while this one goes on reading (`lab exec`, `status`,
    /// `logs`: a long `exec` must not hold every other command up). Don't change
    /// anything after unlocking.
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// The lab directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lab(&self) -> &str {
        &self.lab
    }

    /// The lab's network namespace, holding the cluster bridges: `il-<lab>`.
    pub fn lab_netns(&self) -> String {
        lab_netns(&self.lab)
    }

    fn save(&self) -> Result<(), RuntimeError> {
        self.state.save(&self.dir.join(STATE_FILE))
    }

    /// Creates, if missing, the lab's network namespace (`lo` up, forwarding on) and in
    /// it cluster `cluster`'s bridge with address `gateway` in `pod_cidr`. The lab
    /// namespace then routes between the pod ranges of all clusters (their bridges are
    /// directly connected), and nowhere else. A cluster's range cannot change while
    /// the lab runs, nor overlap another's. Also repairs: a bridge removed behind the
    /// lab's back is made again, with the cluster's pods attached.
    pub fn ensure_cluster(
        &mut self,
        cluster: &str,
        pod_cidr: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), RuntimeError> {
        validate_name("cluster name", cluster)?;
        require_root("set up cluster networks")?;
        let pod_cidr = pod_cidr.trunc();
        check_lab_range("pod range", pod_cidr)?;
        if !pod_cidr.contains(&gateway)
            || gateway == pod_cidr.network()
            || (pod_cidr.prefix_len() < 31 && gateway == pod_cidr.broadcast())
        {
            return Err(RuntimeError::InvalidNetwork(format!(
                "gateway {gateway} of cluster {cluster} is not a host address of its pod \
                 range {pod_cidr}"
            )));
        }
        if let Some(other) = self.state.clusters.values().find(|c| {
            c.name != cluster
                && (c.pod_cidr.contains(&pod_cidr.network())
                    || pod_cidr.contains(&c.pod_cidr.network()))
        }) {
            return Err(RuntimeError::InvalidNetwork(format!(
                "pod range {pod_cidr} of cluster {cluster} overlaps {} of cluster {}",
                other.pod_cidr, other.name
            )));
        }
        let record = match self.state.clusters.get(cluster) {
            Some(c) if c.pod_cidr != pod_cidr || c.gateway != gateway => {
                return Err(RuntimeError::ClusterConflict {
                    cluster: cluster.to_string(),
                    existing: c.pod_cidr,
                    existing_gateway: c.gateway,
                    wanted: pod_cidr,
                    wanted_gateway: gateway,
                });
            }
            Some(c) => c.clone(),
            None => {
                let bridge = (0..)
                    .map(|i| format!("ilbr{i}"))
                    .find(|b| !self.state.clusters.values().any(|c| &c.bridge == b))
                    .unwrap_or_default();
                let record = ClusterRecord {
                    name: cluster.to_string(),
                    bridge,
                    pod_cidr,
                    gateway,
                };
                // Recorded before it exists: a crash in between leaves nothing unknown.
                self.state
                    .clusters
                    .insert(cluster.to_string(), record.clone());
                self.save()?;
                record
            }
        };
        self.ensure_bridge(&record)
    }

    fn ensure_lab_netns(&self) -> Result<(), RuntimeError> {
        let ns = self.lab_netns();
        if !netns_exists(&ns) {
            tracing::info!(netns = %ns, "creating the lab's network namespace");
            ip(&["netns", "add", &ns])?;
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        cmd::sysctl(&ns, &["net.ipv4.ip_forward=1"])
    }

    fn ensure_bridge(&self, cluster: &ClusterRecord) -> Result<(), RuntimeError> {
        self.ensure_lab_netns()?;
        let ns = self.lab_netns();
        let bridge = cluster.bridge.as_str();
        let created = !ip_succeeds(&["-n", &ns, "link", "show", "dev", bridge])?;
        if created {
            tracing::info!(cluster = %cluster.name, bridge, netns = %ns, "creating bridge");
            ip(&["-n", &ns, "link", "add", bridge, "type", "bridge"])?;
        }
        let addr = format!("{}/{}", cluster.gateway, cluster.pod_cidr.prefix_len());
        ip(&["-n", &ns, "addr", "replace", &addr, "dev", bridge])?;
        ip(&["-n", &ns, "link", "set", bridge, "up"])?;
        if created {
            // A bridge deleted behind the lab's back took its ports along: attach the
            // veths of the cluster's pods that are still there.
            for pod in self.state.pods.values() {
                if pod.key.cluster == cluster.name
                    && ip_succeeds(&["-n", &ns, "link", "show", "dev", &pod.veth])?
                {
                    ip(&["-n", &ns, "link", "set", &pod.veth, "master", bridge, "up"])?;
                }
            }
        }
        Ok(())
    }

    /// Creates pod `key` (its cluster set up by [`Runtime::ensure_cluster`]): network
    /// namespace `il-<lab>-<n>` with `lo` up, `eth0` with `ip/prefix` on the cluster's
    /// bridge, a route via the cluster's gateway for each of `routes` (the service
    /// range, other clusters' pod ranges; never a default route), unprivileged ports
    /// from 0 (as Istio's gateways set), `/etc/netns/<netns>/` with `hosts` (after
    /// localhost), a `resolv.conf` without nameserver and an `nsswitch.conf` looking up
    /// hosts in files only, and, with `capture`, Istio's iptables capture. Returns the
    /// namespace's name. On failure, what was made is removed again.
    pub fn create_pod(
        &mut self,
        key: &PodKey,
        ip: Ipv4Addr,
        prefix: u8,
        routes: &[Ipv4Net],
        hosts: &str,
        capture: Option<&Capture>,
    ) -> Result<String, RuntimeError> {
        validate_key(key)?;
        require_root("create pods")?;
        if let Some(pod) = self.state.pods.get(&key.to_string()) {
            return Err(RuntimeError::PodExists {
                key: key.clone(),
                netns: pod.netns.clone(),
            });
        }
        let cluster = self
            .state
            .clusters
            .get(&key.cluster)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownCluster(key.cluster.clone()))?;
        let subnet = Ipv4Net::new(ip, prefix)
            .map_err(|_| RuntimeError::InvalidNetwork(format!("prefix /{prefix} of pod {key}")))?;
        let invalid = |msg: String| Err(RuntimeError::InvalidNetwork(msg));
        if !cluster.pod_cidr.contains(&ip) {
            return invalid(format!(
                "address {ip} of pod {key} is outside its cluster's pod range {}",
                cluster.pod_cidr
            ));
        }
        if !subnet.contains(&cluster.gateway) {
            return invalid(format!(
                "{subnet} of pod {key} does not contain its gateway {}",
                cluster.gateway
            ));
        }
        if ip == cluster.gateway
            || ip == subnet.network()
            || (prefix < 31 && ip == subnet.broadcast())
        {
            return invalid(format!(
                "{ip} of pod {key} is its subnet's network, broadcast or gateway address"
            ));
        }
        if let Some(other) = self.state.pods.values().find(|p| p.ip == ip) {
            return invalid(format!("{ip} is already pod {}'s address", other.key));
        }
        let mut pod_routes: Vec<Ipv4Net> = Vec::new();
        for route in routes {
            let route = route.trunc();
            if route.prefix_len() == 0 {
                return invalid(format!(
                    "route {route} for pod {key}: pods never get a default route"
                ));
            }
            check_lab_range("route", route)?;
            // Inside the pod's own subnet, eth0 reaches it directly.
            if !subnet.contains(&route) && !pod_routes.contains(&route) {
                pod_routes.push(route);
            }
        }
        let (netns, n) = loop {
            let n = self.state.next_pod;
            self.state.next_pod += 1;
            let name = format!("il-{}-{n}", self.lab);
            if !netns_exists(&name) && !etc_netns(&name).exists() {
                break (name, n);
            }
        };
        let pod = PodRecord {
            key: key.clone(),
            netns: netns.clone(),
            veth: format!("vp{n}"),
            ip,
            prefix,
            routes: pod_routes,
            capture: capture.cloned(),
            processes: Vec::new(),
        };
        // Recorded before it exists: a crash in between leaves nothing unknown.
        self.state.pods.insert(key.to_string(), pod.clone());
        self.save()?;
        if let Err(e) = self.build_pod(&pod, &cluster, hosts) {
            tracing::warn!(pod = %key, error = %e, "creating the pod failed; removing it again");
            if let Err(cleanup) =
                self.teardown(std::slice::from_ref(&pod), Duration::ZERO, Term::Everything)
            {
                tracing::warn!(pod = %key, error = %cleanup, "removing a half-made pod failed");
            }
            self.state.pods.remove(&key.to_string());
            self.save()?;
            return Err(e);
        }
        tracing::info!(pod = %key, %netns, %ip, "pod created");
        Ok(netns)
    }

    fn build_pod(
        &self,
        pod: &PodRecord,
        cluster: &ClusterRecord,
        hosts: &str,
    ) -> Result<(), RuntimeError> {
        let lab_ns = self.lab_netns();
        if !netns_exists(&lab_ns) {
            // E.g. after a reboot: /var/run is a tmpfs.
            self.ensure_bridge(cluster)?;
        }
        let ns = pod.netns.as_str();
        let veth = pod.veth.as_str();
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &lab_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&[
            "-n",
            &lab_ns,
            "link",
            "set",
            veth,
            "master",
            &cluster.bridge,
            "up",
        ])?;
        let addr = format!("{}/{}", pod.ip, pod.prefix);
        ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        let gateway = cluster.gateway.to_string();
        for route in &pod.routes {
            let route = route.to_string();
            ip(&[
                "-n", ns, "route", "add", &route, "via", &gateway, "dev", "eth0",
            ])?;
        }
        cmd::sysctl(ns, &["net.ipv4.ip_unprivileged_port_start=0"])?;
        self.write_etc(ns, hosts)?;
        if let Some(capture) = &pod.capture {
            let mut cmd = Command::new(tool(&IP)?);
            cmd.args(["netns", "exec", ns])
                .arg(tool(&IPTABLES_RESTORE)?);
            cmd::run(&mut cmd, Some(capture.iptables_restore_input().as_bytes()))?;
        }
        Ok(())
    }

    fn write_etc(&self, netns: &str, hosts: &str) -> Result<(), RuntimeError> {
        let dir = etc_netns(netns);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
        write_in_place(&dir.join("hosts"), &hosts_file(hosts))?;
        write_in_place(&dir.join("resolv.conf"), RESOLV_CONF)?;
        // `ip netns exec` only mounts files that exist in /etc.
        if let Ok(host) = std::fs::read_to_string("/etc/nsswitch.conf") {
            write_in_place(&dir.join("nsswitch.conf"), &nsswitch_files_only(&host))?;
        }
        Ok(())
    }

    /// Replaces the `hosts` part of a pod's `/etc/hosts`, in place: processes already
    /// running in the pod see the change.
    pub fn update_hosts(&self, key: &PodKey, hosts: &str) -> Result<(), RuntimeError> {
        let pod = self.pod_checked(key)?;
        write_in_place(&etc_netns(&pod.netns).join("hosts"), &hosts_file(hosts))
    }

    /// A recorded pod.
    pub fn pod(&self, key: &PodKey) -> Option<&PodRecord> {
        self.state.pods.get(&key.to_string())
    }

    /// A recorded pod whose namespace exists.
    fn pod_checked(&self, key: &PodKey) -> Result<&PodRecord, RuntimeError> {
        let pod = self
            .pod(key)
            .ok_or_else(|| RuntimeError::UnknownPod(key.clone()))?;
        if !netns_exists(&pod.netns) {
            return Err(RuntimeError::NetnsGone {
                key: key.clone(),
                netns: pod.netns.clone(),
            });
        }
        Ok(pod)
    }

    /// Every recorded pod.
    pub fn pods(&self) -> Vec<PodRecord> {
        self.state.pods.values().cloned().collect()
    }

    /// Every recorded cluster.
    pub fn clusters(&self) -> Vec<ClusterRecord> {
        self.state.clusters.values().cloned().collect()
    }

    /// Deletes pod `key`: see [`Runtime::delete_pods`].
    pub fn delete_pod(&mut self, key: &PodKey, grace: Duration) -> Result<(), RuntimeError> {
        self.delete_pods(std::slice::from_ref(key), grace)
    }

    /// Deletes pods `keys` together, as a kubelet stops a pod: SIGTERM to each
    /// container's recorded process (a supervisor passes it on to its container), up to
    /// `grace` for every process in the pods' namespaces to exit, SIGKILL to what
    /// remains (process groups and anything else in the namespaces); then their veths,
    /// namespaces and `/etc/netns` entries. Forgets them.
    pub fn delete_pods(&mut self, keys: &[PodKey], grace: Duration) -> Result<(), RuntimeError> {
        require_root("delete pods")?;
        let pods = keys
            .iter()
            .map(|key| {
                self.pod(key)
                    .cloned()
                    .ok_or_else(|| RuntimeError::UnknownPod(key.clone()))
            })
            .collect::<Result<Vec<PodRecord>, _>>()?;
        self.teardown(&pods, grace, Term::Leaders)?;
        for pod in &pods {
            self.state.pods.remove(&pod.key.to_string());
            tracing::info!(pod = %pod.key, netns = %pod.netns, "pod deleted");
        }
        self.save()
    }

    /// Stops the processes of `pods` (`term` says which get SIGTERM first; after
    /// `grace`, SIGKILL to everything) and removes their networks.
    fn teardown(
        &self,
        pods: &[PodRecord],
        grace: Duration,
        term: Term,
    ) -> Result<Vec<u32>, RuntimeError> {
        let stopped = Targets {
            leaders: pods.iter().flat_map(|p| &p.processes).collect(),
            namespaces: pods
                .iter()
                .filter_map(|p| netns_id(&netns_path(&p.netns)))
                .collect(),
            group: None,
            term,
        }
        .stop(grace);
        let lab_ns = self.lab_netns();
        for pod in pods {
            if netns_exists(&lab_ns) {
                match ip(&["-n", &lab_ns, "link", "del", &pod.veth]) {
                    Err(e) if !is_gone(&e) => return Err(e),
                    _ => {}
                }
            }
            if netns_exists(&pod.netns) {
                ip(&["netns", "del", &pod.netns])?;
            }
            remove_etc_netns(&pod.netns)?;
        }
        Ok(stopped)
    }
}

fn remove_etc_netns(netns: &str) -> Result<(), RuntimeError> {
    let dir = etc_netns(netns);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io("remove", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_namespaces_are_recognised_exactly() {
        assert!(is_lab_netns("il-t1", "t1"));
        assert!(is_lab_netns("il-t1-7", "t1"));
        assert!(is_lab_netns("il-t1-12", "t1"));
        assert!(!is_lab_netns("il-t10", "t1"));
        assert!(!is_lab_netns("il-t10-1", "t1"));
        assert!(!is_lab_netns("il-t1-", "t1"));
        assert!(!is_lab_netns("il-t1-x", "t1"));
        assert!(!is_lab_netns("il-t1-1-2", "t1"));
        assert!(!is_lab_netns("t1", "t1"));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_lab("t123").is_ok());
        for bad in ["", "T1", "t-1", "t_1", "a234567890123456789012345"] {
            assert!(validate_lab(bad).is_err(), "{bad}");
        }
        assert!(validate_key(&PodKey::new("c1", "default", "web-0.x")).is_ok());
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(validate_name("pod name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_and_nsswitch_files() {
        assert_eq!(
            hosts_file("198.19.0.5 web"),
            "# Written by isthmus lab; rewritten in place when services change.\n\
             127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             198.19.0.5 web\n"
        );
        assert_eq!(
            nsswitch_files_only("passwd: files\nhosts:  files mdns4_minimal dns\n"),
            "passwd: files\nhosts:          files\n"
        );
        assert_eq!(
            nsswitch_files_only("passwd: files\n"),
            "passwd: files\nhosts:          files\n"
        );
    }

    #[test]
    fn in_place_writes_keep_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    }

    #[test]
    fn the_lab_range_is_the_benchmarking_range() {
        assert_eq!(LAB_RANGE.to_string(), "198.18.0.0/15");
        assert!(check_lab_range("x", "198.19.0.0/16".parse().unwrap()).is_ok());
        assert!(check_lab_range("x", "10.0.0.0/8".parse().unwrap()).is_err());
        assert!(check_lab_range("x", "0.0.0.0/0".parse().unwrap()).is_err());
    }
}
