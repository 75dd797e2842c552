//! Multi-document YAML in Kubernetes format, parsed into typed objects.
//!
//! Every document is parsed on its own: a broken one yields findings that name the
//! file, the document, the object and the field, and the documents around it still
//! parse. Keys that no field takes are reported (as `kubectl apply` with strict field
//! validation does), never silently dropped.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::diagnostic::codes;
use crate::istio::{self, IstioConfig, ValidateSpec, ValidationContext};
use crate::{Diagnostic, Level, ResourceRef, Str, intern};

/// Largest file a source reads; larger ones are reported, not parsed.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The kinds Isthmus reads. Anything else is skipped (with a debug log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Namespace,
    Service,
    Endpoints,
    EndpointSlice,
    Pod,
    Deployment,
    ServiceAccount,
    Node,
    Secret,
    ConfigMap,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
}

const ISTIO_NETWORKING: (&str, &[&str]) = ("networking.istio.io", &["v1", "v1beta1", "v1alpha3"]);
const ISTIO_SECURITY: (&str, &[&str]) = ("security.istio.io", &["v1", "v1beta1"]);

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Deployment,
        Kind::ServiceAccount,
        Kind::Node,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Node => "Node",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
        }
    }

    fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind)
    }

    /// The API group and the versions served for this kind.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kind::Deployment => ("apps", &["v1"]),
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar => ISTIO_NETWORKING,
            Kind::PeerAuthentication => ISTIO_SECURITY,
            _ => ("", &["v1"]),
        }
    }

    /// Whether objects of this kind live outside namespaces.
    pub fn cluster_scoped(self) -> bool {
        matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Whether this is Istio configuration (read from config clusters).
    pub fn is_istio(self) -> bool {
        !self.group_versions().0.is_empty() && self.group_versions().0.ends_with("istio.io")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identity of an object within one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    pub namespace: Str,
    pub name: Str,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: intern(namespace),
            name: intern(name),
        }
    }
    pub fn resource(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.name().to_string(),
            namespace: (!self.namespace.is_empty()).then(|| self.namespace.to_string()),
            name: self.name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resource())
    }
}

/// A typed object. Variants differ in size; objects live behind `Arc`s, so the
/// enum's size does not multiply.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    Deployment(Deployment),
    ServiceAccount(ServiceAccount),
    Node(Node),
    Secret(Secret),
    ConfigMap(ConfigMap),
    VirtualService(IstioConfig<istio::VirtualService>),
    DestinationRule(IstioConfig<istio::DestinationRule>),
    Gateway(IstioConfig<istio::Gateway>),
    ServiceEntry(IstioConfig<istio::ServiceEntry>),
    WorkloadEntry(IstioConfig<istio::WorkloadEntry>),
    Sidecar(IstioConfig<istio::Sidecar>),
    PeerAuthentication(IstioConfig<istio::PeerAuthentication>),
}

macro_rules! each_object {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::Namespace($o) => $e,
            Object::Service($o) => $e,
            Object::Endpoints($o) => $e,
            Object::EndpointSlice($o) => $e,
            Object::Pod($o) => $e,
            Object::Deployment($o) => $e,
            Object::ServiceAccount($o) => $e,
            Object::Node($o) => $e,
            Object::Secret($o) => $e,
            Object::ConfigMap($o) => $e,
            Object::VirtualService($o) => $e,
            Object::DestinationRule($o) => $e,
            Object::Gateway($o) => $e,
            Object::ServiceEntry($o) => $e,
            Object::WorkloadEntry($o) => $e,
            Object::Sidecar($o) => $e,
            Object::PeerAuthentication($o) => $e,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Node(_) => Kind::Node,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::Gateway(_) => Kind::Gateway,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_object!(self, o => &mut o.metadata)
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.meta();
        ObjectKey::new(
            self.kind(),
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
        )
    }
}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourcePos {
    pub file: Arc<Path>,
    /// 0-based index of the document in its file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

/// One document of a file, parsed.
#[derive(Clone, Debug)]
pub struct ParsedDocument {
    pub pos: SourcePos,
    /// The object, when the document is one Isthmus reads and has no errors.
    pub object: Option<Object>,
    /// What is wrong (or doubtful) with the document.
    pub diagnostics: Vec<Diagnostic>,
    /// Set when the document's kind is not one Isthmus reads (apiVersion, kind).
    pub skipped_kind: Option<(String, String)>,
    /// The object the document names, even when it has errors.
    pub key: Option<ObjectKey>,
}

/// Splits a YAML stream into documents: (first line, 1-based; text). A byte-order mark
/// and `%` directives before a document are dropped; content on a `---` line belongs to
/// the document it starts.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    // Whether the current document holds only blank lines, comments and directives so far.
    let mut preamble = true;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_sep = trimmed == "---"
            || (trimmed.starts_with("---") && trimmed[3..].starts_with([' ', '\t', '#']));
        if is_sep {
            docs.push((start_line, &text[start_byte..offset]));
            let rest = trimmed[3..].trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                start_byte = offset + line.len();
                start_line = i + 2;
                preamble = true;
            } else {
                // `--- {apiVersion: v1, ...}`: the document starts on this line.
                start_byte = offset + 3;
                start_line = i + 1;
                preamble = false;
            }
        } else if preamble && trimmed.starts_with('%') {
            // A directive (`%YAML 1.2`, `%TAG`): not content.
            start_byte = offset + line.len();
            start_line = i + 2;
        } else if preamble
            && !(trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#'))
        {
            preamble = false;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

/// Deepest flow nesting accepted (Kubernetes objects need a handful of levels).
pub const MAX_FLOW_DEPTH: usize = 256;

/// Formats a serde_ignored path as `spec.http[0].rout`.
fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Deserializes a document into `T`, collecting keys no field takes.
pub(crate) fn typed<T: DeserializeOwned>(
    value: serde_yaml_ng::Value,
) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok((v, unknown)),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err((path, e.into_inner().to_string()))
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Parses every document in `text` (the contents of `file`). Namespaced objects
/// without `metadata.namespace` are placed in `default_namespace`.
pub fn parse_documents(
    file: &Path,
    text: &str,
    default_namespace: &str,
    domain_suffix: &str,
) -> Vec<ParsedDocument> {
    let file: Arc<Path> = Arc::from(file);
    if text.len() > MAX_FILE_BYTES {
        let pos = SourcePos {
            file,
            document: 0,
            line: 1,
        };
        return vec![ParsedDocument {
            diagnostics: vec![Diagnostic::error(
                codes::YAML_SYNTAX_ERROR,
                format!(
                    "file is {} bytes; the largest file read is {MAX_FILE_BYTES} bytes: split it into several files",
                    text.len()
                ),
            )
            .at(&pos)],
            pos,
            object: None,
            skipped_kind: None,
            key: None,
        }];
    }
    split_documents(text)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (line, doc))| {
            let pos = SourcePos {
                file: file.clone(),
                document: i,
                line,
            };
            parse_one(pos, doc, default_namespace, domain_suffix)
        })
        .collect()
}

fn str_field<'a>(v: &'a serde_yaml_ng::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

fn parse_one(
    pos: SourcePos,
    doc: &str,
    default_ns: &str,
    domain_suffix: &str,
) -> Option<ParsedDocument> {
    let mut out = ParsedDocument {
        pos: pos.clone(),
        object: None,
        diagnostics: Vec::new(),
        skipped_kind: None,
        key: None,
    };
    // Read as Kubernetes reads it (crate::yaml), which also measures the flow nesting.
    let (doc, depth) = crate::yaml::kubernetes_compatible(doc);
    if depth > MAX_FLOW_DEPTH {
        out.diagnostics.push(
            Diagnostic::error(
                codes::YAML_SYNTAX_ERROR,
                format!("flow collections ([ or {{) nest {depth} levels deep; at most {MAX_FLOW_DEPTH} are read"),
            )
            .at(&pos),
        );
        return Some(out);
    }
    let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&doc) {
        Ok(v) => v,
        Err(e) => {
            let mut d = Diagnostic::error(codes::YAML_SYNTAX_ERROR, format!("not valid YAML: {e}"))
                .at(&pos);
            if let Some(loc) = e.location() {
                d.line = Some(pos.line + loc.line().saturating_sub(1));
            }
            out.diagnostics.push(d);
            return Some(out);
        }
    };
    if value.is_null() {
        return None; // an empty document, e.g. a trailing `---`
    }
    if !value.is_mapping() {
        out.diagnostics.push(
            Diagnostic::error(
                codes::SCHEMA_VALIDATION_ERROR,
                "a document must be a mapping with apiVersion, kind and metadata",
            )
            .at(&pos),
        );
        return Some(out);
    }
    let (Some(api_version), Some(kind_name)) =
        (str_field(&value, "apiVersion"), str_field(&value, "kind"))
    else {
        let missing = if str_field(&value, "apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        out.diagnostics.push(
            Diagnostic::error(
                codes::SCHEMA_VALIDATION_ERROR,
                format!("the document has no {missing} (a string)"),
            )
            .with_field(missing)
            .at(&pos),
        );
        return Some(out);
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let Some(kind) = Kind::from_name(kind_name).filter(|k| k.group_versions().0 == group) else {
        tracing::debug!(file = %pos.file.display(), document = pos.document, api_version, kind = kind_name, "skipping a kind Isthmus does not read");
        out.skipped_kind = Some((api_version.to_string(), kind_name.to_string()));
        return Some(out);
    };
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| str_field(m, "name"))
        .unwrap_or_default()
        .to_string();
    let namespace = if kind.cluster_scoped() {
        String::new()
    } else {
        meta.and_then(|m| str_field(m, "namespace"))
            .unwrap_or(default_ns)
            .to_string()
    };
    let key = ObjectKey::new(kind, &namespace, &name);
    let resource = key.resource();
    out.key = Some(key);
    let diag = |code, field: &str, msg: String| {
        Diagnostic::error(code, msg)
            .with_resource(resource.clone())
            .with_field(field)
            .at(&pos)
    };
    let (group_name, versions) = kind.group_versions();
    if !versions.contains(&version) {
        let served = versions.iter().map(|v| {
            if group_name.is_empty() {
                v.to_string()
            } else {
                format!("{group_name}/{v}")
            }
        });
        out.diagnostics.push(diag(
            codes::SCHEMA_VALIDATION_ERROR,
            "apiVersion",
            format!(
                "{kind} is not served as {api_version}; use {}",
                served.collect::<Vec<_>>().join(" or ")
            ),
        ));
        return Some(out);
    }
    if name.is_empty() {
        out.diagnostics.push(diag(
            codes::SCHEMA_VALIDATION_ERROR,
            "metadata.name",
            "metadata.name is required".into(),
        ));
    } else if !is_dns1123_subdomain(&name) {
        out.diagnostics.push(diag(
            codes::SCHEMA_VALIDATION_ERROR,
            "metadata.name",
            format!("{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"),
        ));
    }
    if !kind.cluster_scoped() && !is_dns1123_label(&namespace) {
        out.diagnostics.push(diag(
            codes::SCHEMA_VALIDATION_ERROR,
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace name (a DNS label: lowercase letters, digits and '-')"),
        ));
    }

    let parsed = match kind {
        Kind::Namespace => typed(value).map(|(o, u)| (Object::Namespace(o), u)),
        Kind::Service => typed(value).map(|(o, u)| (Object::Service(o), u)),
        Kind::Endpoints => typed(value).map(|(o, u)| (Object::Endpoints(o), u)),
        Kind::EndpointSlice => typed(value).map(|(o, u)| (Object::EndpointSlice(o), u)),
        Kind::Pod => typed(value).map(|(o, u)| (Object::Pod(o), u)),
        Kind::Deployment => typed(value).map(|(o, u)| (Object::Deployment(o), u)),
        Kind::ServiceAccount => typed(value).map(|(o, u)| (Object::ServiceAccount(o), u)),
        Kind::Node => typed(value).map(|(o, u)| (Object::Node(o), u)),
        Kind::Secret => typed(value).map(|(o, u)| (Object::Secret(o), u)),
        Kind::ConfigMap => typed(value).map(|(o, u)| (Object::ConfigMap(o), u)),
        Kind::VirtualService => typed(value).map(|(o, u)| (Object::VirtualService(o), u)),
        Kind::DestinationRule => typed(value).map(|(o, u)| (Object::DestinationRule(o), u)),
        Kind::Gateway => typed(value).map(|(o, u)| (Object::Gateway(o), u)),
        Kind::ServiceEntry => typed(value).map(|(o, u)| (Object::ServiceEntry(o), u)),
        Kind::WorkloadEntry => typed(value).map(|(o, u)| (Object::WorkloadEntry(o), u)),
        Kind::Sidecar => typed(value).map(|(o, u)| (Object::Sidecar(o), u)),
        Kind::PeerAuthentication => typed(value).map(|(o, u)| (Object::PeerAuthentication(o), u)),
    };
    let (mut object, unknown) = match parsed {
        Ok(x) => x,
        Err((field, msg)) => {
            out.diagnostics
                .push(diag(codes::SCHEMA_VALIDATION_ERROR, &field, msg));
            return Some(out);
        }
    };
    for field in unknown {
        let leaf = field
            .rsplit(['.', ']'])
            .next()
            .unwrap_or(&field)
            .to_string();
        out.diagnostics.push(diag(
            codes::UNKNOWN_FIELD,
            &field,
            format!("unknown field {leaf:?}: no such field in {kind} (check its spelling and indentation)"),
        ));
    }
    if !kind.cluster_scoped() {
        object.meta_mut().namespace = Some(namespace.clone());
    }
    let ctx = ValidationContext {
        namespace: &namespace,
        domain_suffix,
    };
    let mut issues = Vec::new();
    match &object {
        Object::VirtualService(o) => o.spec.validate(&ctx, &mut issues),
        Object::DestinationRule(o) => o.spec.validate(&ctx, &mut issues),
        Object::Gateway(o) => o.spec.validate(&ctx, &mut issues),
        Object::ServiceEntry(o) => o.spec.validate(&ctx, &mut issues),
        Object::WorkloadEntry(o) => o.spec.validate(&ctx, &mut issues),
        Object::Sidecar(o) => o.spec.validate(&ctx, &mut issues),
        Object::PeerAuthentication(o) => o.spec.validate(&ctx, &mut issues),
        Object::Service(s) => crate::istio::validate::validate_service(s, &mut issues),
        _ => {}
    }
    for i in issues {
        let mut d = diag(codes::SCHEMA_VALIDATION_ERROR, &i.field, i.message);
        d.level = i.level;
        out.diagnostics.push(d);
    }
    if !out.diagnostics.iter().any(|d| d.level == Level::Error) {
        out.object = Some(object);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<ParsedDocument> {
        parse_documents(Path::new("test.yaml"), text, "default", "cluster.local")
    }

    #[test]
    fn splits_documents_with_lines() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3\n");
        assert_eq!(docs, vec![(1, "a: 1\n"), (3, "b: 2\n"), (5, "c: 3\n")]);
    }

    #[test]
    fn parses_a_service_into_the_default_namespace() {
        let docs = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: details\nspec:\n  ports:\n  - port: 9080\n    name: http\n",
        );
        assert_eq!(docs.len(), 1);
        assert!(docs[0].diagnostics.is_empty(), "{:?}", docs[0].diagnostics);
        let obj = docs[0].object.as_ref().unwrap();
        assert_eq!(
            obj.key(),
            ObjectKey::new(Kind::Service, "default", "details")
        );
    }

    #[test]
    fn reports_unknown_fields_with_their_path() {
        let docs = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  prots:\n  - port: 1\n",
        );
        let d = &docs[0].diagnostics;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].field.as_deref(), Some("spec.prots"));
        assert_eq!(d[0].code, "ISM0002");
        assert!(docs[0].object.is_none());
    }

    #[test]
    fn reports_wrong_types_with_their_path() {
        let docs = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n  - port: eighty\n",
        );
        let d = &docs[0].diagnostics;
        assert_eq!(d[0].field.as_deref(), Some("spec.ports[0].port"), "{d:?}");
        assert!(d[0].message.contains("invalid type"), "{}", d[0].message);
    }

    #[test]
    fn a_broken_document_leaves_the_others() {
        let docs = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: [\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n",
        );
        assert_eq!(docs.len(), 3);
        assert!(docs[0].object.is_some());
        assert_eq!(docs[1].diagnostics[0].code, "ISM0001");
        assert!(
            matches!(docs[1].diagnostics[0].line, Some(6..=7)),
            "{:?}",
            docs[1].diagnostics[0]
        );
        assert!(docs[2].object.is_some());
    }

    #[test]
    fn unknown_kinds_are_skipped_not_errors() {
        let docs = parse(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: a\n",
        );
        assert!(docs[0].diagnostics.is_empty());
        assert!(docs[0].skipped_kind.is_some());
    }

    #[test]
    fn wrong_version_of_a_known_kind_is_an_error() {
        let docs = parse(
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: a\n",
        );
        assert!(
            docs[0].diagnostics[0]
                .message
                .contains("networking.istio.io/v1")
        );
    }

    #[test]
    fn missing_name_is_an_error() {
        let docs = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n");
        assert_eq!(
            docs[0].diagnostics[0].field.as_deref(),
            Some("metadata.name")
        );
    }
}
