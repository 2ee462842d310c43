#!/usr/bin/env bash
# A throwaway PostgreSQL server on localhost for the sweep tests (tests/sweep/test_postgres.py).
#
#   eval "$(scripts/ci-postgres.sh start)"     # prints: export SMTO_TEST_POSTGRES=postgresql://...
#                                              #         export SMTO_PG_DIR=/tmp/smto-pg.XXXX
#   scripts/ci-postgres.sh stop "$SMTO_PG_DIR" # stops that server and removes its directory
#
# `start` installs Debian's postgresql package if no server binaries are found (apt-get, needs
# root), creates a cluster in a new temporary directory (as the `postgres` user when run as
# root: PostgreSQL refuses to run as root), starts it listening on 127.0.0.1 only, on a free
# port, with trust authentication (a local, throwaway server), and creates the database
# `smto`. Everything is bounded in time. In a CI script, stop it on exit:
#
#   eval "$(scripts/ci-postgres.sh start)"
#   trap 'scripts/ci-postgres.sh stop "$SMTO_PG_DIR"' EXIT
#
# Progress and errors go to stderr; only the export lines go to stdout.
set -euo pipefail

log() { echo "ci-postgres: $*" >&2; }

pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

install_postgres() {
  if [ "$(id -u)" -ne 0 ]; then
    log "no PostgreSQL server binaries found and not root: install the postgresql package"
    exit 1
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >&2
  timeout 600 apt-get install -y -qq postgresql >&2
}

# Runs a command as the cluster's owner (`postgres` when we are root, else ourselves), killed
# after SECONDS: as_owner SECONDS COMMAND...
as_owner() {
  local seconds="$1"
  shift
  if [ "$(id -u)" -eq 0 ]; then
    timeout "$seconds" runuser -u postgres -- "$@"
  else
    timeout "$seconds" "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bindir dir port
  bindir="$(pg_bindir)"
  if [ -z "$bindir" ]; then
    install_postgres
    bindir="$(pg_bindir)"
  fi
  [ -n "$bindir" ] || { log "no initdb after installing postgresql"; exit 1; }
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root and no 'postgres' user to own the cluster"
    exit 1
  fi
  dir="$(mktemp -d /tmp/smto-pg.XXXXXX)"
  chmod 755 "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  port="$(free_port)"
  log "cluster in $dir on 127.0.0.1:$port ($bindir)"
  as_owner 120 "$bindir/initdb" -D "$dir/data" -U smto --auth=trust -E UTF8 \
    --no-instructions >/dev/null
  as_owner 60 "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" \
    start >/dev/null
  as_owner 30 "$bindir/createdb" -h 127.0.0.1 -p "$port" -U smto smto
  echo "export SMTO_TEST_POSTGRES=postgresql://smto@127.0.0.1:$port/smto"
  echo "export SMTO_PG_DIR=$dir"
}

stop() {
  local dir="${1:-}" bindir
  if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
    log "usage: $0 stop DIR (the SMTO_PG_DIR printed by start)"
    exit 1
  fi
  bindir="$(pg_bindir)"
  as_owner 60 "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *)
    log "usage: $0 start | $0 stop DIR"
    exit 2
    ;;
esac
