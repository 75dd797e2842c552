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
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
