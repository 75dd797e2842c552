#!/usr/bin/env bash
# Fuzzes what the control plane parses from the network, for a bounded time, installing
# cargo-fuzz if it is missing. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS (default 60) is per target: each target named (default: all three) runs
#   that long, one after the other.
#   Targets: requests (crates/xds/fuzz: the xDS request decoders),
#            csr, token (crates/ca/fuzz: the CA's CSR and service-account token parsers).
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes.
# With FUZZ_SANITIZER=none (or when AddressSanitizer does not build here) it runs
# without a sanitizer; panics and libFuzzer's allocation limit still count. Every
# target runs even when another fails; the script then fails, naming those that
# crashed or did not build.
source "$(dirname "$0")/common.sh"
usage="usage: scripts/fuzz.sh [SECONDS per target] [requests|csr|token ...]"
seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "SECONDS must be a positive whole number, not '$seconds' ($usage)"
shift $(( $# > 0 ? 1 : 0 ))

# target -> its fuzz workspace (relative to the repository root), and what it fuzzes.
declare -A dir=([requests]=crates/xds/fuzz [csr]=crates/ca/fuzz [token]=crates/ca/fuzz)
declare -A what=([requests]="the xDS request decoders" [csr]="the CA's CSR parsing and signing"
                 [token]="the CA's service-account token verification")
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(requests csr token)
for t in "${targets[@]}"; do
    [ -n "${dir[$t]:-}" ] || die "unknown target '$t' ($usage)"
done

ensure_build_tools
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
requested="${FUZZ_SANITIZER:-address}"
failed=()
for t in "${targets[@]}"; do
    cd "$ROOT/${dir[$t]}"
    sanitizer="$requested"
    if ! cargo fuzz build -s "$sanitizer" "$t"; then
        built=false
        if [ "$sanitizer" != none ]; then
            say "the $sanitizer sanitizer does not build here; fuzzing $t without one"
            sanitizer=none
            cargo fuzz build -s none "$t" && built=true
        fi
        if ! "$built"; then
            say "FAILED: the fuzz target $t does not build"
            failed+=("$t (does not build)")
            continue
        fi
    fi
    mkdir -p "scratch/$t"
    say "fuzzing ${what[$t]} ($t) for ${seconds} s (new inputs in ${dir[$t]}/scratch/$t)"
    # The first corpus directory takes what the run finds; the seeds stay as committed.
    # Inputs up to 64 KiB; 2 GB of memory at most, 256 MB in one allocation.
    if ! cargo fuzz run -s "$sanitizer" "$t" "scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -print_final_stats=1; then
        say "FAILED: $t found a crash (the input is in ${dir[$t]}/artifacts/$t/)"
        failed+=("$t")
    fi
done
[ ${#failed[@]} -eq 0 ] || die "fuzzing failed: ${failed[*]} (crash inputs in crates/*/fuzz/artifacts/TARGET/; see the README next to each target)"
say "no crashes in ${targets[*]} (${seconds} s each)"
