//! ISM0007 NotEnforcedYet: the fields of the mesh's Istio config that Isthmus accepts
//! but does not act on yet, one finding each, from the rules of
//! `isthmus_model::istio::enforcement`.

use isthmus_model::diagnostic::codes;
use isthmus_model::istio::enforcement::not_enforced;
use isthmus_model::{Diagnostic, Level};

use crate::Item;

/// The level of ISM0007 findings: the config is valid (Istio honours it), but traffic
/// will not behave as it says, so not an Error and more than an Info.
const LEVEL: Level = Level::Warning;

/// One finding per field not enforced yet, for every object Isthmus reads as Istio
/// config (from config clusters and the analyzed paths).
pub(crate) fn check(items: &[Item], out: &mut Vec<Diagnostic>) {
    for item in items.iter().filter(|i| i.config) {
        for n in not_enforced(&item.object) {
            out.push(item.diag(LEVEL, codes::NOT_ENFORCED_YET, n.field, n.message));
        }
    }
}
