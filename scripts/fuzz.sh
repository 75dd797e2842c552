#!/usr/bin/env bash
# Fuzzes the xDS request decoders (crates/xds/fuzz) for a bounded time, installing
# cargo-fuzz if it is missing. Usage: scripts/fuzz.sh [SECONDS] (default 60)
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes.
# With FUZZ_SANITIZER=none (or when AddressSanitizer does not build here) it runs
# without a sanitizer; panics and libFuzzer's allocation limit still count.
source "$(dirname "$0")/common.sh"
seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "SECONDS must be a positive whole number, not '$seconds' (usage: scripts/fuzz.sh [SECONDS])"
ensure_build_tools
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
cd "$ROOT/crates/xds/fuzz"
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
if ! cargo fuzz build -s "$sanitizer" requests; then
    [ "$sanitizer" = none ] && die "the fuzz target does not build"
    say "the $sanitizer sanitizer does not build here; fuzzing without one"
    sanitizer=none
    cargo fuzz build -s none requests
fi
mkdir -p scratch
say "fuzzing the request decoders for ${seconds} s (new inputs in crates/xds/fuzz/scratch)"
# The first corpus directory takes what the run finds; the seeds stay as committed.
# Inputs up to 64 KiB; 2 GB of memory at most, 256 MB in one allocation.
cargo fuzz run -s "$sanitizer" requests scratch corpus/requests -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -print_final_stats=1
