//! Findings about user input, shaped like `istioctl analyze` output:
//! `Error [IST0106] (VirtualService default/reviews) spec.http[0].route[0].weight: …`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How severe a finding is. A source skips a document with any `Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Message codes. Istio's own where Istio has one for the same finding.
pub mod codes {
    /// (code, name)
    pub type Code = (&'static str, &'static str);
    pub const INTERNAL_ERROR: Code = ("IST0001", "InternalError");
    pub const REFERENCED_RESOURCE_NOT_FOUND: Code = ("IST0101", "ReferencedResourceNotFound");
    pub const SCHEMA_VALIDATION_ERROR: Code = ("IST0106", "SchemaValidationError");
    pub const CONFLICTING_MESH_GATEWAY_VS_HOSTS: Code =
        ("IST0109", "ConflictingMeshGatewayVirtualServiceHosts");
    /// Istio has no code for a document that isn't YAML: `istioctl analyze` stops on it.
    pub const YAML_SYNTAX_ERROR: Code = ("ISM0001", "YamlSyntaxError");
    pub const UNKNOWN_FIELD: Code = ("ISM0002", "UnknownField");
    pub const MESH_CONFIG_ERROR: Code = ("ISM0003", "MeshConfigError");
    pub const DUPLICATE_OBJECT: Code = ("ISM0004", "DuplicateObject");
    /// A source kept an object's last good version because its document is now broken.
    pub const KEPT_LAST_GOOD: Code = ("ISM0005", "KeptLastGoodVersion");
    /// A field Isthmus accepts but does not act on yet (see `istio::enforcement`).
    /// ISM0006 is the analyzer's ConflictingDestinationRules.
    pub const NOT_ENFORCED_YET: Code = ("ISM0007", "NotEnforcedYet");
}

/// One finding about user input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    pub code: &'static str,
    /// Human-readable name of the code, e.g. `SchemaValidationError`.
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path inside the document, e.g. `spec.http[0].route[1].weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// 0-based index of the document in its file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// 1-based line: of the error when known, else of the document's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Diagnostic {
    pub fn new(level: Level, code: codes::Code, message: impl Into<String>) -> Self {
        Self {
            level,
            code: code.0,
            name: code.1,
            resource: None,
            field: None,
            message: message.into(),
            file: None,
            document: None,
            line: None,
        }
    }
    pub fn error(code: codes::Code, message: impl Into<String>) -> Self {
        Self::new(Level::Error, code, message)
    }
    pub fn warning(code: codes::Code, message: impl Into<String>) -> Self {
        Self::new(Level::Warning, code, message)
    }
    pub fn with_resource(mut self, r: ResourceRef) -> Self {
        self.resource = Some(r);
        self
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let f = field.into();
        self.field = (!f.is_empty()).then_some(f);
        self
    }
    pub fn at(mut self, pos: &crate::SourcePos) -> Self {
        self.file = Some(pos.file.to_path_buf());
        self.document = Some(pos.document);
        if self.line.is_none() {
            self.line = Some(pos.line);
        }
        self
    }
    pub fn with_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        if let Some(r) = &self.resource {
            write!(f, " ({r})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.message)?;
        if let Some(file) = &self.file {
            write!(f, " [{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            if let Some(doc) = self.document {
                write!(f, ", document {}", doc + 1)?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}
