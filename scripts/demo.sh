#!/usr/bin/env bash
# Sets up and runs the main job on the bundled example mesh (3 clusters, 2 networks):
# validates it like `istioctl analyze`, then prints the merged multi-cluster registry.
# Usage: scripts/demo.sh [path/to/mesh.yaml]
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_tools
MESH="${1:-examples/mesh.yaml}"

say "building isthmus (release)"
cargo build --release --locked -q -p isthmus-cli
BIN="$ROOT/target/release/isthmus"

say "isthmus analyze --mesh $MESH"
"$BIN" analyze --mesh "$MESH"
say "isthmus registry --mesh $MESH"
"$BIN" registry --mesh "$MESH"
