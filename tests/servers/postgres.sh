#!/usr/bin/env bash
# PostgreSQL 15 for the accounting store's tests.
#
#   postgres.sh install
#   postgres.sh start DIR    # cluster in DIR/postgres/ (owned by user postgres), keys in DIR/env
#   postgres.sh stop DIR
#
# A throw-away cluster: trust authentication for user postgres on 127.0.0.1 only, fsync off,
# and one database `hpcgate`. initdb and postgres refuse to run as root, so both run as the
# `postgres` system user (created by the Debian package) in a directory it owns.
SERVER_NAME=postgres
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
ENV_KEYS=(DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE PG_DATA PG_LOG PG_PID_FILE)

install() {
  ensure_pkgs postgresql-15 postgresql-client-15
}

as_postgres() {
  runuser -u postgres -- "$@"
}

start() {
  local dir d port
  dir=$(need_dir "${1:-}")
  d=$dir/postgres
  [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is not installed; run '$0 install'"
  if [[ -s $d/data/postmaster.pid ]] && pid_alive "$(head -n1 "$d/data/postmaster.pid")"; then
    die "already running in $d; stop it first"
  fi
  rm -rf "$d"
  mkdir -p "$d"
  chown postgres: "$d"
  # mktemp -d makes DIR 0700; the postgres user needs to pass through it.
  allow_traverse "$dir"
  as_postgres test -w "$d" \
    || die "user postgres cannot write $d: every parent directory needs o+x"

  as_postgres "$PG_BIN/initdb" -D "$d/data" -A trust -U postgres --no-sync -E UTF8 --locale=C \
    >"$d/initdb.log" 2>&1 || { cat "$d/initdb.log" >&2; die "initdb failed"; }

  port=$(free_port)
  # -k: the Unix socket goes into our dir, not /var/run/postgresql (which may not exist).
  # Durability settings are off: the data dies with the test anyway.
  # pg_ctl -l sends the server's output to the log, so no inherited fd keeps the caller waiting.
  as_postgres "$PG_BIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 30 start -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $d -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    </dev/null >"$d/pg_ctl.log" 2>&1 || { cat "$d/pg_ctl.log" "$d/postgres.log" >&2; die "pg_ctl start failed"; }
  wait_for "$PG_BIN/pg_isready -q -h 127.0.0.1 -p $port" 15 "postgres on 127.0.0.1:$port" "$d/postgres.log"

  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c 'CREATE DATABASE hpcgate' || die "CREATE DATABASE failed"

  env_set "$dir" DATABASE_URL "postgres://postgres@127.0.0.1:$port/hpcgate"
  env_set "$dir" PGHOST 127.0.0.1
  env_set "$dir" PGPORT "$port"
  env_set "$dir" PGUSER postgres
  env_set "$dir" PGDATABASE hpcgate
  env_set "$dir" PG_DATA "$d/data"
  env_set "$dir" PG_LOG "$d/postgres.log"
  env_set "$dir" PG_PID_FILE "$d/data/postmaster.pid"
  log "ready on 127.0.0.1:$port"
}

stop() {
  local dir d pid
  dir=$(need_dir "${1:-}")
  d=$dir/postgres
  if [[ -s $d/data/postmaster.pid ]]; then
    pid=$(head -n1 "$d/data/postmaster.pid")
    # fast: roll back open transactions and disconnect clients instead of waiting for them.
    as_postgres "$PG_BIN/pg_ctl" -D "$d/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    stop_pid "$pid" postgres 10
  fi
  env_unset "$dir" "${ENV_KEYS[@]}"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) usage_exit "$0 install | start DIR | stop DIR" ;;
esac
