//! A cluster backed by a directory tree of Kubernetes-format YAML.
//!
//! Files are parsed document by document; a broken document is reported and skipped
//! while the rest of the file keeps working. When a file can't be read or the whole
//! directory disappears, the last good state stays (nothing is withdrawn on an error).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use isthmus_model::diagnostic::codes;
use isthmus_model::{ClusterId, Diagnostic, Object, ObjectKey, SourcePos, parse_documents};

use crate::cluster::ObjectChange;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cluster {cluster}: cannot read manifest directory {}: {source}; keeping its last known state (check that the directory exists and is readable)", path.display())]
    Unreadable {
        cluster: ClusterId,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Deepest directory nesting that is read.
const MAX_DEPTH: usize = 32;

#[derive(Debug)]
struct FileState {
    stamp: Option<(SystemTime, u64)>,
    objects: BTreeMap<ObjectKey, Arc<Object>>,
    /// The object each document (by index) defined when last valid.
    doc_keys: Vec<Option<ObjectKey>>,
    /// Where each object is written.
    positions: BTreeMap<ObjectKey, SourcePos>,
    diagnostics: Vec<Diagnostic>,
}

/// The objects of one cluster, read from a directory.
pub struct ManifestSource {
    cluster: ClusterId,
    root: PathBuf,
    default_namespace: String,
    domain_suffix: String,
    files: BTreeMap<PathBuf, FileState>,
    /// Files that define each object; the first by path wins.
    providers: HashMap<ObjectKey, BTreeSet<PathBuf>>,
}

/// Whether a path is a manifest file the source reads.
pub fn is_manifest_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    !name.starts_with('.')
        && !name.ends_with('~')
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

fn list_files(root: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !hidden && depth < MAX_DEPTH {
                // An unreadable subdirectory is skipped, not fatal.
                let _ = list_files(&path, depth + 1, out);
            }
        } else if is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ManifestSource {
    pub fn new(cluster: ClusterId, root: PathBuf, domain_suffix: &str) -> Self {
        Self {
            cluster,
            root,
            default_namespace: "default".into(),
            domain_suffix: domain_suffix.into(),
            files: BTreeMap::new(),
            providers: HashMap::new(),
        }
    }

    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the whole tree again; returns the changes since the last read. Files in
    /// `touched` are re-read even if their size and time look unchanged.
    pub fn rescan(&mut self, touched: &[PathBuf]) -> Result<Vec<ObjectChange>, SourceError> {
        let mut paths = Vec::new();
        list_files(&self.root, 0, &mut paths).map_err(|source| SourceError::Unreadable {
            cluster: self.cluster.clone(),
            path: self.root.clone(),
            source,
        })?;
        let present: BTreeSet<PathBuf> = paths.into_iter().collect();
        let mut affected = BTreeSet::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.files.remove(&path) {
                self.forget(&path, &old, &mut affected);
            }
        }
        for path in &present {
            let st = stamp(path);
            let unchanged = self
                .files
                .get(path)
                .is_some_and(|f| f.stamp.is_some() && f.stamp == st);
            if unchanged && !touched.contains(path) {
                continue;
            }
            self.reload(path, st, &mut affected);
        }
        Ok(self.resolve(affected))
    }

    /// Every object currently provided, as changes from nothing.
    pub fn snapshot_changes(&self) -> Vec<ObjectChange> {
        self.providers
            .keys()
            .filter_map(|k| self.current(k))
            .map(ObjectChange::Upsert)
            .collect()
    }

    fn reload(
        &mut self,
        path: &Path,
        st: Option<(SystemTime, u64)>,
        affected: &mut BTreeSet<ObjectKey>,
    ) {
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    self.file_error(
                        path,
                        st,
                        "the file is not UTF-8 text; save it as UTF-8".into(),
                    );
                    return;
                }
            },
            Err(e) => {
                // Keep what the file provided before; report why it can't be read now.
                tracing::warn!(cluster = %self.cluster, file = %path.display(), error = %e, "cannot read manifest file; keeping its last good objects");
                if let Some(f) = self.files.get_mut(path) {
                    f.diagnostics = vec![
                        Diagnostic::error(
                            codes::YAML_SYNTAX_ERROR,
                            format!("cannot read the file: {e}"),
                        )
                        .at(&pos(path)),
                    ];
                }
                return;
            }
        };
        let docs = parse_documents(path, &text, &self.default_namespace, &self.domain_suffix);
        let mut objects = BTreeMap::new();
        let mut diagnostics = Vec::new();
        let mut doc_keys = Vec::new();
        let mut positions = BTreeMap::new();
        let old = self.files.get(path);
        for doc in docs {
            for d in &doc.diagnostics {
                tracing::warn!(cluster = %self.cluster, "{d}");
            }
            diagnostics.extend(doc.diagnostics);
            let index = doc.pos.document;
            if doc_keys.len() <= index {
                doc_keys.resize(index + 1, None);
            }
            if doc.object.is_none() && doc.skipped_kind.is_none() {
                // A broken document keeps the last good version of the object it defined
                // (as an API server keeps an object whose update was rejected).
                let previous = doc
                    .key
                    .clone()
                    .or_else(|| old.and_then(|f| f.doc_keys.get(index).cloned().flatten()));
                if let Some(key) = previous
                    && let Some(last_good) = old.and_then(|f| f.objects.get(&key))
                {
                    diagnostics.push(
                        Diagnostic::warning(codes::KEPT_LAST_GOOD, format!("{key}: this document has errors; its last good version stays in effect until they are fixed"))
                            .with_resource(key.resource())
                            .at(&doc.pos),
                    );
                    doc_keys[index] = Some(key.clone());
                    positions.insert(key.clone(), doc.pos.clone());
                    objects.entry(key).or_insert_with(|| last_good.clone());
                }
            }
            if let Some(o) = doc.object {
                let key = o.key();
                if objects.contains_key(&key) {
                    diagnostics.push(
                        Diagnostic::warning(
                            codes::DUPLICATE_OBJECT,
                            format!("{key} is defined again in this file; the later document wins"),
                        )
                        .with_resource(key.resource())
                        .at(&doc.pos),
                    );
                }
                doc_keys[index] = Some(key.clone());
                positions.insert(key.clone(), doc.pos.clone());
                objects.insert(key, Arc::new(o));
            }
        }
        if let Some(old) = self.files.remove(path) {
            self.forget(path, &old, affected);
        }
        for key in objects.keys() {
            self.providers
                .entry(key.clone())
                .or_default()
                .insert(path.to_path_buf());
            affected.insert(key.clone());
        }
        self.files.insert(
            path.to_path_buf(),
            FileState {
                stamp: st,
                objects,
                doc_keys,
                positions,
                diagnostics,
            },
        );
    }

    fn file_error(&mut self, path: &Path, st: Option<(SystemTime, u64)>, msg: String) {
        let d = Diagnostic::error(codes::YAML_SYNTAX_ERROR, msg).at(&pos(path));
        tracing::warn!(cluster = %self.cluster, "{d}");
        match self.files.get_mut(path) {
            Some(f) => {
                f.diagnostics = vec![d];
                f.stamp = st;
            }
            None => {
                self.files.insert(
                    path.to_path_buf(),
                    FileState {
                        stamp: st,
                        objects: BTreeMap::new(),
                        doc_keys: Vec::new(),
                        positions: BTreeMap::new(),
                        diagnostics: vec![d],
                    },
                );
            }
        }
    }

    fn forget(&mut self, path: &Path, old: &FileState, affected: &mut BTreeSet<ObjectKey>) {
        for key in old.objects.keys() {
            if let Some(set) = self.providers.get_mut(key) {
                set.remove(path);
                if set.is_empty() {
                    self.providers.remove(key);
                }
            }
            affected.insert(key.clone());
        }
    }

    fn current(&self, key: &ObjectKey) -> Option<Arc<Object>> {
        let file = self.providers.get(key)?.first()?;
        self.files.get(file)?.objects.get(key).cloned()
    }

    fn resolve(&mut self, affected: BTreeSet<ObjectKey>) -> Vec<ObjectChange> {
        affected
            .into_iter()
            .map(|k| match self.current(&k) {
                Some(o) => ObjectChange::Upsert(o),
                None => ObjectChange::Delete(k),
            })
            .collect()
    }

    /// Every object in effect, with where it is written.
    pub fn objects(&self) -> Vec<(Arc<Object>, Option<SourcePos>)> {
        self.providers
            .iter()
            .filter_map(|(k, files)| {
                let f = self.files.get(files.first()?)?;
                Some((f.objects.get(k)?.clone(), f.positions.get(k).cloned()))
            })
            .collect()
    }

    /// Findings in the files as they are now, including objects defined in two files.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = self
            .files
            .values()
            .flat_map(|f| f.diagnostics.iter().cloned())
            .collect();
        for (key, files) in &self.providers {
            if files.len() > 1 {
                let winner = files
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                for f in files.iter().skip(1) {
                    out.push(
                        Diagnostic::warning(codes::DUPLICATE_OBJECT, format!("{key} is also defined in {winner}, which is used (the first file by path wins)"))
                            .with_resource(key.resource())
                            .at(&pos(f)),
                    );
                }
            }
        }
        out
    }
}

fn pos(path: &Path) -> SourcePos {
    SourcePos {
        file: Arc::from(path),
        document: 0,
        line: 1,
    }
}
