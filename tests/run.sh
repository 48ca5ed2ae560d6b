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
# headless Chromium and its WebDriver for the web console's tests (tests/clients/test_console.py)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v python3 >/dev/null || need_apt+=(python3)
# node and npm for kafkajs (tests/clients/test_kafkajs.py); a node that came with its own npm
# (NodeSource's) is kept as it is
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# Debian splits venv's pip bootstrap (ensurepip) into python3-venv
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
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
# reinstall when tests/requirements.txt changes (the venv keeps a copy of what it was built from)
REQ_STAMP="$VENV/.sluice-requirements.txt"
if ! cmp -s tests/requirements.txt "$REQ_STAMP" \
  || ! "$VENV/bin/python" -c 'import confluent_kafka, kafka, pytest, cryptography' 2>/dev/null; then
  log "pip install -r tests/requirements.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$REQ_STAMP"
fi
export SLUICE_PYTHON="$VENV/bin/python"

# kafkajs and its codecs (pure JS / WebAssembly, no native build) for the real-client suite;
# reinstalled when package-lock.json changes (node_modules keeps a copy of what it came from)
JS=tests/clients/js
JS_STAMP="$JS/node_modules/.sluice-package-lock.json"
if ! cmp -s "$JS/package-lock.json" "$JS_STAMP"; then
  log "npm ci --prefix $JS"
  npm ci --prefix "$JS" --no-audit --no-fund --no-update-notifier --loglevel=error
  cp "$JS/package-lock.json" "$JS_STAMP"
fi

# CI builds from scratch once: incremental caches would only cost disk
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace

# Real clients (confluent-kafka, kafka-python, kcat, kafkajs) against the broker binary; each
# test starts its own sluice-server on 127.0.0.1 with a fresh data dir (tests/clients/conftest.py).
log "real-client suite (pytest tests/clients)"
cargo build -p sluice-server -p sluice-tools
SLUICE_SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/sluice-server" \
SLUICE_CLI_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/sluice" \
  "$VENV/bin/python" -m pytest -q tests/clients

# (benches are type-checked by clippy --all-targets above; building them in release here would
# double CI's compile time)
log "all tests passed"
