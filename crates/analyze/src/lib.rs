//! `isthmus analyze` (placeholder).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use isthmus_model::{Diagnostic, MeshConfig};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn analyze(
    _mesh: Option<&MeshConfig>,
    _paths: &[PathBuf],
) -> Result<Vec<Diagnostic>, AnalyzeError> {
    Ok(Vec::new())
}

pub fn render(findings: &[Diagnostic]) -> String {
    findings.iter().map(|d| format!("{d}\n")).collect()
}
