#!/usr/bin/env bash
# One entry point for a fresh clone: `bash dev.sh demo` sets everything up and runs the main job,
# `bash dev.sh test` runs the test suite. Both create .venv and install the project when needed.
# `bash dev.sh clean` removes .state (the demo's TLS material, token and data). PORT= picks the
# demo server's port (default 4000).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
STATE=${COPY_OFFLOAD_DEV_STATE:-$ROOT/.state}
PY=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "== creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import copy_offload.server, pytest, tornado" 2>/dev/null \
        || [ pyproject.toml -nt "$VENV/.installed" ]; then
        echo "== installing flux-copy-offload[test] (editable; log in $VENV/install.log)"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
                && "$VENV/bin/python" -m pip install -e ".[test]"; } >"$VENV/install.log" 2>&1; then
            tail -n 30 "$VENV/install.log" >&2
            echo "dev.sh: installation failed; the whole log is $VENV/install.log" >&2
            exit 1
        fi
        touch "$VENV/.installed"
    fi
}

material() {
    # Development TLS material, token key and token, made by our own admin tool (files 0600).
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    if [ ! -s "$STATE/tls/tls.crt" ]; then
        "$VENV/bin/copy-offload-admin" tls --host localhost --host 127.0.0.1 --out "$STATE/tls"
    fi
    if [ ! -s "$STATE/token.key" ]; then
        "$VENV/bin/copy-offload-admin" token-key --out "$STATE/token.key"
    fi
    "$VENV/bin/copy-offload-admin" token --key "$STATE/token.key" --out "$STATE/token" --force
}

port_free() {
    # Can a server bind 127.0.0.1:$1? (SO_REUSEADDR as the server sets it, so TIME_WAIT is no reason.)
    "$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except (OSError, OverflowError):
    sys.exit(1)
' "$1"
}

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
}

demo() {
    local port=${PORT:-4000}
    case $port in
        '' | *[!0-9]* | ??????*) echo "dev.sh: PORT=$port is not a port number (1-65535); e.g. PORT=4100 bash dev.sh demo" >&2; exit 2 ;;
    esac
    port=$((10#$port))
    if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        echo "dev.sh: PORT=$port is not a port number (1-65535); e.g. PORT=4100 bash dev.sh demo" >&2
        exit 2
    fi
    if ! port_free "$port"; then
        echo "dev.sh: port $port on 127.0.0.1 is in use; pick another: PORT=$((port == 4100 ? 4200 : 4100)) bash dev.sh demo" >&2
        exit 1
    fi
    setup
    material
    local data="$STATE/demo"
    rm -rf "$data/dst"
    mkdir -p "$data/src/nested/deeper" "$data/dst"
    echo "== generating demo data in $data/src (1 GiB + a small tree)"
    if [ ! -s "$data/src/big.bin" ]; then
        head -c $((1024 * 1024 * 1024)) /dev/urandom > "$data/src/big.bin"
    fi
    for i in $(seq 1 200); do echo "file $i" > "$data/src/nested/f$i.txt"; done
    : > "$data/src/nested/deeper/empty"
    local log="$STATE/server.log"
    echo "== starting copy-offload-server (local driver, TLS, token) on 127.0.0.1:$port; log in $log"
    "$VENV/bin/copy-offload-server" -addr "127.0.0.1:$port" -cert "$STATE/tls/tls.crt" -cakey "$STATE/tls/tls.key" \
        -tokenkey "$STATE/token.key" --driver local --allow-root "$data" --state-dir "$STATE/server" \
        >"$log" 2>&1 &
    SERVER_PID=$!
    trap stop_server EXIT
    export NNF_CONTAINER_LAUNCHER=127.0.0.1 NNF_CONTAINER_PORTS=$port
    DW_WORKFLOW_TOKEN=$(cat "$STATE/token")
    export DW_WORKFLOW_TOKEN
    local co=("$VENV/bin/copy-offload" --ca "$STATE/tls/tls.crt")
    for _ in $(seq 1 100); do
        "${co[@]}" hello >/dev/null 2>&1 && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then  # it stopped: its log says why
            echo "dev.sh: the server did not start: $(tail -n 1 "$log")" >&2
            exit 1
        fi
        sleep 0.2
    done
    "${co[@]}" hello
    echo "== copy $data/src -> $data/dst (the client long-polls the server for progress)"
    "${co[@]}" copy "$data/src" "$data/dst" --wait
    echo "== verify"
    diff -r "$data/src" "$data/dst/src" && echo "destination matches the source byte for byte"
    "${co[@]}" shutdown
    wait "$SERVER_PID" && echo "== server exited cleanly"
    SERVER_PID=
    trap - EXIT
    echo "== $STATE holds $(du -sh "$STATE" | cut -f1); bash dev.sh clean removes it"
}

clean() {
    # Only the demo's state: TLS material, token, data and server records (.venv stays).
    if [ ! -e "$STATE" ]; then
        echo "nothing to clean: $STATE does not exist"
        return
    fi
    local size
    size=$(du -sh "$STATE" | cut -f1)
    rm -rf "$STATE"
    echo "removed $STATE ($size: demo TLS material, token, data and server records)"
}

import_tree() {
    # copy_offload.* as links to the repository's folders, for the tools that read the import
    # graph and types from files (the editable install maps the names with an import hook).
    local tree="$VENV/import-tree"
    mkdir -p "$tree/copy_offload"
    ln -sfn "$ROOT/client" "$tree/copy_offload/client"
    ln -sfn "$ROOT/server" "$tree/copy_offload/server"
    ln -sfn "$ROOT/flux_plugin" "$tree/copy_offload/flux"
    echo "$tree"
}

run_tests() {
    setup
    "$VENV/bin/ruff" check .
    local tree
    tree=$(import_tree)
    PYTHONPATH="$tree" "$VENV/bin/lint-imports" --no-cache
    MYPYPATH="$tree" "$VENV/bin/mypy" --no-error-summary -p copy_offload.client
    "$VENV/bin/python" -m pytest -q "$@"
}

case "${1:-}" in
    setup) setup ;;
    demo) demo ;;
    test) shift; run_tests "$@" ;;
    clean) clean ;;
    *) echo "usage: [PORT=4000] bash dev.sh demo | test [pytest args] | setup | clean" >&2; exit 2 ;;
esac
