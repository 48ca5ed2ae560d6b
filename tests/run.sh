#!/usr/bin/env bash
# The project's test command: installs what the suites need on a fresh Debian machine,
# then runs format and lint checks and every test. Idempotent; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# System packages: kcat (librdkafka 2.0.x, an old strict client) for the real-client suites.
need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python clients in a venv (confluent-kafka bundles librdkafka 2.x; kafka-python is pure Python).
VENV="${SLUICE_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import confluent_kafka, kafka' 2>/dev/null; then
  log "pip install clients"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
fi
export SLUICE_PYTHON="$VENV/bin/python"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace

log "benches compile"
cargo bench --workspace --no-run -q 2>/dev/null || cargo bench --workspace --no-run

log "all tests passed"
