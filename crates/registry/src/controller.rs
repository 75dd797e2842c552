//! Runs the registry: reads every cluster's source, watches it for changes, resolves
//! gateway hostnames, and publishes snapshots and change events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isthmus_model::sync::lock;
use isthmus_model::{ClusterId, Diagnostic, MeshConfig};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::model::ChangeEvent;
use crate::registry::{Registry, Snapshot, SyncState};
use crate::source::ManifestSource;

/// How long a file being written (created or modified, not closed yet) is waited for
/// before the tree is read again. A file closed after writing, renamed into place or
/// removed is read at once.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(10);
/// How often a tree is read again even without file events (catches missed events
/// and directories that come back).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

struct Inner {
    registry: Mutex<Registry>,
    snapshot: watch::Sender<Snapshot>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
    diagnostics: Mutex<BTreeMap<ClusterId, Vec<Diagnostic>>>,
    resolve_now: tokio::sync::Notify,
}

impl Inner {
    fn publish(&self, event: ChangeEvent, registry: &Registry) {
        if event.is_empty() {
            return;
        }
        let gateways = event.gateways;
        tracing::debug!(
            services = event.services.len(),
            gateways,
            config = event.config.len(),
            "registry changed"
        );
        self.snapshot.send_replace(registry.snapshot());
        let _ = self.events.send(Arc::new(event));
        if gateways {
            self.resolve_now.notify_one();
        }
    }

    fn rescan(&self, source: &mut ManifestSource, touched: &[PathBuf]) {
        let cluster = source.cluster().clone();
        let result = source.rescan(touched);
        lock(&self.diagnostics).insert(cluster.clone(), source.diagnostics());
        let mut reg = lock(&self.registry);
        let (event, state) = match result {
            Ok(changes) => (reg.apply(&cluster, changes), SyncState::Synced),
            Err(e) => {
                tracing::error!("{e}");
                (ChangeEvent::default(), SyncState::Unreachable)
            }
        };
        let version = reg.snapshot_version();
        reg.set_sync(&cluster, state);
        if event.is_empty() {
            // Only the sync state may have changed: publish the snapshot, no event.
            if reg.snapshot_version() != version {
                self.snapshot.send_replace(reg.snapshot());
            }
        } else {
            self.publish(event, &reg);
        }
    }
}

/// The running registry. Dropping it stops its tasks.
pub struct Controller {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    _watchers: Vec<notify::RecommendedWatcher>,
}

impl Controller {
    /// Reads every cluster once, then keeps watching. Must run inside a tokio runtime.
    pub fn start(mesh: &MeshConfig) -> Self {
        let registry = Registry::new(mesh);
        let (snapshot, _) = watch::channel(registry.snapshot());
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            registry: Mutex::new(registry),
            snapshot,
            events,
            diagnostics: Mutex::new(BTreeMap::new()),
            resolve_now: tokio::sync::Notify::new(),
        });
        let mut tasks = Vec::new();
        let mut watchers = Vec::new();
        for c in &mesh.clusters {
            let Some(dir) = &c.source.manifests else {
                continue;
            };
            let root = mesh.resolve(dir);
            let mut source = ManifestSource::new(c.name.clone(), root.clone(), &mesh.domain_suffix);
            inner.rescan(&mut source, &[]);
            let (tx, rx) = mpsc::unbounded_channel::<FileEvent>();
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    for e in FileEvent::of(ev) {
                        let _ = tx.send(e);
                    }
                }
            }) {
                Ok(mut w) => {
                    if let Err(e) = w.watch(&root, RecursiveMode::Recursive) {
                        tracing::warn!(cluster = %c.name, dir = %root.display(), error = %e, "cannot watch the manifest directory; it is read again every {RESCAN_INTERVAL:?}");
                    }
                    watchers.push(w);
                }
                Err(e) => {
                    tracing::warn!(cluster = %c.name, error = %e, "no file watching; the directory is read again every {RESCAN_INTERVAL:?}")
                }
            }
            tasks.push(tokio::spawn(watch_loop(inner.clone(), source, rx)));
        }
        tasks.push(tokio::spawn(resolve_loop(
            inner.clone(),
            mesh.gateway_refresh(),
        )));
        Self {
            inner,
            tasks,
            _watchers: watchers,
        }
    }

    /// The registry as it is now.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot.borrow().clone()
    }

    /// Snapshots as they change.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.inner.snapshot.subscribe()
    }

    /// Change events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.inner.events.subscribe()
    }

    /// Findings in every cluster's files.
    pub fn diagnostics(&self) -> BTreeMap<ClusterId, Vec<Diagnostic>> {
        lock(&self.inner.diagnostics).clone()
    }

    /// Whether every cluster has been read once.
    pub fn ready(&self) -> bool {
        self.snapshot()
            .sync
            .values()
            .all(|s| *s == SyncState::Synced)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A file event that may change what the tree holds.
#[derive(Debug)]
struct FileEvent {
    path: PathBuf,
    /// The file is whole: closed after writing, renamed into place, or removed.
    complete: bool,
}

impl FileEvent {
    fn of(ev: notify::Event) -> Vec<FileEvent> {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind};
        let complete = match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => true,
            // Reads (open, close-without-write) change nothing, and the rescan's own
            // reads would otherwise trigger the next rescan, forever.
            EventKind::Access(_) => return Vec::new(),
            _ => false,
        };
        ev.paths
            .into_iter()
            // Hidden files (an editor's swap file, a sync tool's temporary) are never
            // read; their events alone change nothing.
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .map(|path| FileEvent { path, complete })
            .collect()
    }
}

async fn watch_loop(
    inner: Arc<Inner>,
    mut source: ManifestSource,
    mut rx: mpsc::UnboundedReceiver<FileEvent>,
) {
    let mut tick = tokio::time::interval(RESCAN_INTERVAL);
    tick.tick().await;
    loop {
        let mut touched = Vec::new();
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { return };
                // Paths still being written: wait for them (at most WATCH_DEBOUNCE),
                // then read everything touched meanwhile at once.
                let mut writing = std::collections::BTreeSet::new();
                let mut note = |e: FileEvent, writing: &mut std::collections::BTreeSet<PathBuf>| {
                    if e.complete {
                        writing.remove(&e.path);
                    } else {
                        writing.insert(e.path.clone());
                    }
                    touched.push(e.path);
                };
                note(e, &mut writing);
                let deadline = tokio::time::Instant::now() + WATCH_DEBOUNCE;
                loop {
                    while let Ok(e) = rx.try_recv() {
                        note(e, &mut writing);
                    }
                    if writing.is_empty() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(e)) => note(e, &mut writing),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => {}
        }
        touched.sort();
        touched.dedup();
        inner.rescan(&mut source, &touched);
    }
}

async fn resolve_loop(inner: Arc<Inner>, every: Duration) {
    loop {
        let hosts = lock(&inner.registry).gateway_hostnames();
        for host in hosts {
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((host.as_str(), 0)),
            )
            .await;
            match lookup {
                Ok(Ok(addrs)) => {
                    let ips = addrs.map(|a| a.ip()).collect();
                    let mut reg = lock(&inner.registry);
                    let event = reg.set_resolved(&host, ips);
                    inner.publish(event, &reg);
                }
                Ok(Err(e)) => {
                    tracing::warn!(gateway = %host, error = %e, "cannot resolve gateway hostname; keeping its last addresses")
                }
                Err(_) => {
                    tracing::warn!(gateway = %host, "resolving gateway hostname timed out; keeping its last addresses")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = inner.resolve_now.notified() => {}
        }
    }
}
