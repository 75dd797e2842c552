//! `isthmus analyze`: the per-document validation every source applies (schema,
//! fields, values), plus the cross-object checks of `istioctl analyze`: references to
//! hosts, subsets and gateways that don't exist, gateway selectors that match no
//! workload, and config that conflicts.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use isthmus_model::diagnostic::codes;
use isthmus_model::istio::IstioConfig;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::refs::{GatewayRef, binds_mesh, host_subset_of, labels_subset_of};
use isthmus_model::{
    ClusterId, Diagnostic, Kind, Level, MeshConfig, Object, ObjectKey, SourcePos, parse_documents,
};
use isthmus_registry::ManifestSource;
use serde::Serialize;

mod not_enforced;

/// Two DestinationRules configure the same host in one namespace.
pub const CONFLICTING_DESTINATION_RULES: codes::Code = ("ISM0006", "ConflictingDestinationRules");

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot read {}: {source} (check the path)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an analysis found.
#[derive(Debug, Serialize)]
pub struct Analysis {
    pub findings: Vec<Diagnostic>,
    /// How many objects were analyzed.
    pub objects: usize,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Diagnostic::is_error)
    }
}

/// One object in the analysis, with where it came from.
struct Item {
    object: Arc<Object>,
    pos: Option<SourcePos>,
    /// Istio config is read from config clusters and from the analyzed paths.
    config: bool,
}

impl Item {
    fn diag(
        &self,
        level: Level,
        code: codes::Code,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Diagnostic {
        let mut d = Diagnostic::new(level, code, msg)
            .with_resource(self.object.key().resource())
            .with_field(field);
        if let Some(p) = &self.pos {
            d = d.at(p);
        }
        d
    }
}

/// Analyzes the clusters of `mesh` (when given) and the files and directories in `paths`.
/// Objects from `paths` are analyzed as Istio config of the mesh's config cluster and
/// take the place of objects with the same kind, namespace and name.
pub fn analyze(mesh: Option<&MeshConfig>, paths: &[PathBuf]) -> Result<Analysis, AnalyzeError> {
    let domain = mesh.map_or("cluster.local", |m| m.domain_suffix.as_str());
    let mut findings = Vec::new();
    let mut items: BTreeMap<(Option<ClusterId>, ObjectKey), Item> = BTreeMap::new();
    if let Some(mesh) = mesh {
        for c in &mesh.clusters {
            let Some(dir) = &c.source.manifests else {
                continue;
            };
            let mut source = ManifestSource::new(c.name.clone(), mesh.resolve(dir), domain);
            if let Err(e) = source.rescan(&[]) {
                findings.push(Diagnostic::error(codes::MESH_CONFIG_ERROR, e.to_string()));
                continue;
            }
            findings.extend(source.diagnostics());
            let config = mesh.is_config_cluster(&c.name);
            for (object, pos) in source.objects() {
                let key = object.key();
                let item = Item {
                    object,
                    pos,
                    config,
                };
                if !key.kind.is_istio() {
                    items.insert((Some(c.name.clone()), key), item);
                } else if config {
                    // Config is one store across config clusters, as the registry keeps
                    // it: the same object in two config clusters is one object.
                    items.entry((None, key)).or_insert(item);
                }
            }
        }
    }
    let overlay_cluster = mesh.and_then(|m| m.config_clusters.first().cloned());
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| AnalyzeError::Read {
            path: path.clone(),
            source,
        })?;
        let mut add = |object: Arc<Object>, pos: Option<SourcePos>| {
            let key = object.key();
            let cluster = if key.kind.is_istio() {
                None
            } else {
                overlay_cluster.clone()
            };
            let item = Item {
                object,
                pos,
                config: true,
            };
            items.insert((cluster, key), item);
        };
        if meta.is_dir() {
            let mut source = ManifestSource::new(ClusterId::new("analyze"), path.clone(), domain);
            source.rescan(&[]).map_err(|e| AnalyzeError::Read {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            findings.extend(source.diagnostics());
            for (o, p) in source.objects() {
                add(o, p);
            }
        } else {
            let bytes = std::fs::read(path).map_err(|source| AnalyzeError::Read {
                path: path.clone(),
                source,
            })?;
            let Ok(text) = String::from_utf8(bytes) else {
                let pos = SourcePos {
                    file: Arc::from(path.as_path()),
                    document: 0,
                    line: 1,
                };
                let msg = "the file is not UTF-8 text; save it as UTF-8";
                findings.push(Diagnostic::error(codes::YAML_SYNTAX_ERROR, msg).at(&pos));
                continue;
            };
            for doc in parse_documents(path, &text, "default", domain) {
                findings.extend(doc.diagnostics);
                if let Some(o) = doc.object {
                    add(Arc::new(o), Some(doc.pos));
                }
            }
        }
    }
    let items: Vec<Item> = items.into_values().collect();
    let world = World::new(&items, domain);
    world.check_virtual_services(&mut findings);
    world.check_gateways(&mut findings);
    world.check_destination_rules(&mut findings);
    not_enforced::check(&items, &mut findings);
    findings.sort_by(|a, b| {
        (a.level, a.code, &a.resource, &a.file, a.line, &a.field).cmp(&(
            b.level,
            b.code,
            &b.resource,
            &b.file,
            b.line,
            &b.field,
        ))
    });
    findings.dedup();
    Ok(Analysis {
        findings,
        objects: items.len(),
    })
}

/// Renders findings like `istioctl analyze`.
pub fn render(analysis: &Analysis) -> String {
    if analysis.findings.is_empty() {
        return format!(
            "✔ No validation issues found when analyzing {} objects.\n",
            analysis.objects
        );
    }
    let mut out: String = analysis.findings.iter().map(|d| format!("{d}\n")).collect();
    let count = |l: Level| analysis.findings.iter().filter(|d| d.level == l).count();
    out.push_str(&format!(
        "{} errors, {} warnings, {} info in {} objects\n",
        count(Level::Error),
        count(Level::Warning),
        count(Level::Info),
        analysis.objects
    ));
    out
}

type DestinationRuleRef<'a> = (
    &'a Item,
    &'a IstioConfig<isthmus_model::istio::DestinationRule>,
);

/// The objects under analysis, indexed for the cross-object checks.
struct World<'a> {
    items: &'a [Item],
    domain: &'a str,
    /// Hostnames of Kubernetes Services in any cluster, and ServiceEntry hosts.
    hosts: BTreeSet<String>,
}

fn ns_of(key: &ObjectKey) -> &str {
    &key.namespace
}

impl<'a> World<'a> {
    fn new(items: &'a [Item], domain: &'a str) -> Self {
        let mut hosts = BTreeSet::new();
        for it in items {
            match &*it.object {
                Object::Service(_) => {
                    let key = it.object.key();
                    hosts.insert(format!("{}.{}.svc.{domain}", key.name, key.namespace));
                }
                Object::ServiceEntry(se) if it.config => {
                    hosts.extend(se.spec.hosts.iter().cloned())
                }
                _ => {}
            }
        }
        Self {
            items,
            domain,
            hosts,
        }
    }

    /// Istio's short-name resolution: a name without dots is a Service in `ns`.
    fn resolve(&self, host: &str, ns: &str) -> String {
        isthmus_model::istio::resolve_host(host, ns, self.domain)
    }

    fn host_exists(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| h == host || host_subset_of(host, h) || host_subset_of(h, host))
    }

    fn virtual_services(
        &self,
    ) -> impl Iterator<
        Item = (
            &'a Item,
            &'a IstioConfig<isthmus_model::istio::VirtualService>,
        ),
    > {
        self.items
            .iter()
            .filter(|i| i.config)
            .filter_map(|i| match &*i.object {
                Object::VirtualService(vs) => Some((i, vs)),
                _ => None,
            })
    }

    fn destination_rules(
        &self,
    ) -> impl Iterator<
        Item = (
            &'a Item,
            &'a IstioConfig<isthmus_model::istio::DestinationRule>,
        ),
    > {
        self.items
            .iter()
            .filter(|i| i.config)
            .filter_map(|i| match &*i.object {
                Object::DestinationRule(dr) => Some((i, dr)),
                _ => None,
            })
    }

    fn gateway_exists(&self, ns: &str, name: &str) -> bool {
        self.items.iter().any(|i| {
            i.config
                && i.object.kind() == Kind::Gateway
                && i.object.key() == ObjectKey::new(Kind::Gateway, ns, name)
        })
    }

    fn check_virtual_services(&self, out: &mut Vec<Diagnostic>) {
        let mut mesh_hosts: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
        for (item, vs) in self.virtual_services() {
            let ns = ns_of(&item.object.key()).to_string();
            let spec = &vs.spec;
            let mut dests: Vec<(String, &Destination)> = Vec::new();
            for (i, r) in spec.http.iter().enumerate() {
                for (j, d) in r.route.iter().enumerate() {
                    dests.push((
                        format!("spec.http[{i}].route[{j}].destination"),
                        &d.destination,
                    ));
                }
                if let Some(m) = &r.mirror {
                    dests.push((format!("spec.http[{i}].mirror"), m));
                }
                for (j, m) in r.mirrors.iter().enumerate() {
                    dests.push((
                        format!("spec.http[{i}].mirrors[{j}].destination"),
                        &m.destination,
                    ));
                }
            }
            for (i, r) in spec.tcp.iter().enumerate() {
                for (j, d) in r.route.iter().enumerate() {
                    dests.push((
                        format!("spec.tcp[{i}].route[{j}].destination"),
                        &d.destination,
                    ));
                }
            }
            for (i, r) in spec.tls.iter().enumerate() {
                for (j, d) in r.route.iter().enumerate() {
                    dests.push((
                        format!("spec.tls[{i}].route[{j}].destination"),
                        &d.destination,
                    ));
                }
            }
            for (field, d) in dests {
                let host = self.resolve(&d.host, &ns);
                if !self.host_exists(&host) {
                    out.push(item.diag(
                        Level::Error,
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        format!("{field}.host"),
                        format!("Referenced host not found: {:?} (no Service or ServiceEntry {host} in any cluster; check the name and namespace)", d.host),
                    ));
                    continue;
                }
                if let Some(subset) = &d.subset
                    && !self.subset_defined(&host, subset)
                {
                    out.push(item.diag(
                        Level::Error,
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        format!("{field}.subset"),
                        format!("Referenced host+subset in destinationrule not found: \"{}+{subset}\" (define subset {subset:?} in a DestinationRule for {host})", d.host),
                    ));
                }
            }
            let mut gateways: Vec<(String, &String)> = spec
                .gateways
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("spec.gateways[{i}]"), g))
                .collect();
            for (i, r) in spec.http.iter().enumerate() {
                for (j, m) in r.r#match.iter().enumerate() {
                    gateways.extend(
                        m.gateways
                            .iter()
                            .enumerate()
                            .map(|(k, g)| (format!("spec.http[{i}].match[{j}].gateways[{k}]"), g)),
                    );
                }
            }
            for (field, g) in gateways {
                let GatewayRef::Gateway {
                    namespace: gns,
                    name: gname,
                } = GatewayRef::resolve(g, &ns)
                else {
                    continue;
                };
                if !self.gateway_exists(gns, gname) {
                    out.push(item.diag(
                        Level::Error,
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        field,
                        format!("Referenced gateway not found: {g:?} (no Gateway {gns}/{gname})"),
                    ));
                }
            }
            if binds_mesh(&spec.gateways) {
                for h in &spec.hosts {
                    mesh_hosts
                        .entry(self.resolve(h, &ns))
                        .or_default()
                        .push(item);
                }
            }
        }
        for (host, vss) in mesh_hosts {
            if vss.len() < 2 {
                continue;
            }
            let names: Vec<String> = vss
                .iter()
                .map(|i| {
                    let k = i.object.key();
                    format!("{}/{}", k.namespace, k.name)
                })
                .collect();
            for item in vss {
                out.push(item.diag(
                    Level::Error,
                    codes::CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                    "spec.hosts",
                    format!("The VirtualServices {} associated with mesh gateway define the same host {host:?}, which can lead to undefined behavior; merge them into one VirtualService", names.join(",")),
                ));
            }
        }
    }

    fn subset_defined(&self, host: &str, subset: &str) -> bool {
        self.destination_rules().any(|(item, dr)| {
            let dr_host = self.resolve(&dr.spec.host, ns_of(&item.object.key()));
            (dr_host == host || host_subset_of(host, &dr_host))
                && dr.spec.subsets.iter().any(|s| s.name == subset)
        })
    }

    fn check_gateways(&self, out: &mut Vec<Diagnostic>) {
        for item in self.items.iter().filter(|i| i.config) {
            let Object::Gateway(gw) = &*item.object else {
                continue;
            };
            let sel = &gw.spec.selector;
            if sel.is_empty() {
                continue;
            }
            let matches = |labels: Option<&BTreeMap<String, String>>| {
                labels.is_some_and(|l| labels_subset_of(sel, l))
            };
            let found = self.items.iter().any(|i| match &*i.object {
                Object::Pod(p) => matches(p.metadata.labels.as_ref()),
                Object::Deployment(d) => matches(
                    d.spec
                        .as_ref()
                        .and_then(|s| s.template.metadata.as_ref())
                        .and_then(|m| m.labels.as_ref()),
                ),
                _ => false,
            });
            if !found {
                let s: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push(item.diag(
                    Level::Error,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    "spec.selector",
                    format!("Referenced selector not found: {:?} (no Pod or Deployment in any cluster has these labels; the Gateway configures no proxy)", s.join(",")),
                ));
            }
        }
    }

    fn check_destination_rules(&self, out: &mut Vec<Diagnostic>) {
        let mut by_host: BTreeMap<(String, String), Vec<DestinationRuleRef<'_>>> = BTreeMap::new();
        for (item, dr) in self.destination_rules() {
            let ns = ns_of(&item.object.key()).to_string();
            let host = self.resolve(&dr.spec.host, &ns);
            if !self.host_exists(&host) {
                out.push(item.diag(
                    Level::Warning,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    "spec.host",
                    format!("Referenced host not found: {:?} (no Service or ServiceEntry {host} in any cluster; the rule has no effect)", dr.spec.host),
                ));
            }
            if dr.spec.workload_selector.is_none() {
                by_host.entry((ns, host)).or_default().push((item, dr));
            }
        }
        for ((_, host), drs) in by_host {
            for (a, b) in drs.iter().zip(drs.iter().skip(1)) {
                let (ia, da) = a;
                let (ib, db) = b;
                let shared: Vec<&str> = da
                    .spec
                    .subsets
                    .iter()
                    .filter(|s| db.spec.subsets.iter().any(|t| t.name == s.name))
                    .map(|s| s.name.as_str())
                    .collect();
                let both_policies =
                    da.spec.traffic_policy.is_some() && db.spec.traffic_policy.is_some();
                let (ka, kb) = (ia.object.key(), ib.object.key());
                let names = format!(
                    "{}/{} and {}/{}",
                    ka.namespace, ka.name, kb.namespace, kb.name
                );
                if both_policies || !shared.is_empty() {
                    let what = if both_policies {
                        "both set a top-level trafficPolicy".to_string()
                    } else {
                        format!("both define subset {}", shared.join(","))
                    };
                    out.push(ib.diag(
                        Level::Error,
                        CONFLICTING_DESTINATION_RULES,
                        "spec.host",
                        format!("DestinationRules {names} configure host {host:?} and {what}: only the first is applied; merge them into one DestinationRule"),
                    ));
                } else {
                    out.push(ib.diag(
                        Level::Warning,
                        CONFLICTING_DESTINATION_RULES,
                        "spec.host",
                        format!("DestinationRules {names} configure host {host:?}; they are merged (subsets of both, the trafficPolicy of the one that has it); consider one DestinationRule per host"),
                    ));
                }
            }
        }
    }
}
