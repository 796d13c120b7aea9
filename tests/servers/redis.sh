#!/usr/bin/env bash
# Redis for shared rate-limit / session state tests.
#
#   redis.sh install
#   redis.sh start DIR    # state in DIR/redis/, keys in DIR/env
#   redis.sh stop DIR
#
# No persistence (--save '' and no AOF), loopback only, no password.
SERVER_NAME=redis
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENV_KEYS=(REDIS_URL REDIS_PORT REDIS_PID_FILE REDIS_LOG)

install() {
  ensure_pkgs redis-server redis-tools
}

start() {
  local dir d port
  dir=$(need_dir "${1:-}")
  d=$dir/redis
  command -v redis-server >/dev/null || die "redis-server is not installed; run '$0 install'"
  if [[ -s $d/redis.pid ]] && pid_alive "$(cat "$d/redis.pid")"; then
    die "already running in $d; stop it first"
  fi
  rm -rf "$d"
  mkdir -p "$d"
  port=$(free_port)
  # --daemonize redirects the server's stdio to /dev/null, so the caller is not held.
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
    --dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
    --save '' --appendonly no </dev/null >"$d/start.log" 2>&1 \
    || { cat "$d/start.log" >&2; die "redis-server failed to start"; }
  wait_for "[[ \$(redis-cli -h 127.0.0.1 -p $port ping) == PONG ]]" 10 \
    "redis on 127.0.0.1:$port" "$d/redis.log"
  wait_for "[[ -s $d/redis.pid ]]" 5 "redis pid file" "$d/redis.log"

  env_set "$dir" REDIS_URL "redis://127.0.0.1:$port"
  env_set "$dir" REDIS_PORT "$port"
  env_set "$dir" REDIS_PID_FILE "$d/redis.pid"
  env_set "$dir" REDIS_LOG "$d/redis.log"
  log "ready on 127.0.0.1:$port"
}

stop() {
  local dir d
  dir=$(need_dir "${1:-}")
  d=$dir/redis
  # SIGTERM is a clean shutdown for redis (with --save '' it writes nothing).
  stop_pidfile "$d/redis.pid" redis 10
  env_unset "$dir" "${ENV_KEYS[@]}"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) usage_exit "$0 install | start DIR | stop DIR" ;;
esac
