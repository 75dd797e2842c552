#!/usr/bin/env bash
# Sets up and runs every check: formatting, lints, unit, golden, integration tests,
# and prints the registry benchmark's figures. Usage: scripts/test.sh
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_tools
ensure_traffic_tools
ensure_envoy

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "registry benchmark (figures only; targets are in the README)"
cargo run --release --locked -q -p isthmus-cli -- bench registry --changes 5000
if [ "$(id -u)" = 0 ]; then
    say "lab benchmark (figures only; targets are in the README)"
    cargo run --release --locked -q -p isthmus-cli -- bench lab
fi
say "cargo test"
log="$(mktemp)"
# Tests that skip (no root, no Envoy; never under CI=true) record themselves here.
ISTHMUS_SKIP_LOG="$(mktemp)"
export ISTHMUS_SKIP_LOG
trap 'rm -f "$log" "$ISTHMUS_SKIP_LOG"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
skipped="$(wc -l <"$ISTHMUS_SKIP_LOG")"
if [ "$skipped" -gt 0 ]; then
    say "skipped tests (they returned early, counted as skipped below):"
    sed 's/^/    /' "$ISTHMUS_SKIP_LOG"
fi
# One closing line for the whole suite: a test that returned early because it could not
# run here counts as skipped, not passed.
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$log"
exit "$status"
