#!/usr/bin/env bash
# Headless Chromium behind chromedriver, for browser login tests (e.g. fantoccini).
#
#   chromium.sh install
#   chromium.sh start DIR    # chromedriver state in DIR/chromium/, keys in DIR/env
#   chromium.sh stop DIR
#
# Tests create sessions with capabilities like
#   {"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"binary":CHROMIUM_BINARY,
#     "args": CHROMIUM_ARGS split on ","}}}}
# The flags keep Chromium from calling home (component updates, sync, background fetches):
# this machine has no network and the tests must not send traffic off it.
SERVER_NAME=chromium
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENV_KEYS=(WEBDRIVER_URL WEBDRIVER_PORT CHROMIUM_BINARY CHROMIUM_ARGS CHROMEDRIVER_PID_FILE CHROMEDRIVER_LOG)
CHROMIUM_ARGS=--headless=new,--no-sandbox,--disable-gpu,--disable-dev-shm-usage,--disable-background-networking,--disable-component-update,--disable-sync,--disable-default-apps,--disable-extensions,--no-first-run,--no-default-browser-check,--disable-quic,--metrics-recording-only,--password-store=basic,--use-mock-keychain

install() {
  ensure_pkgs chromium chromium-driver
}

start() {
  local dir d port pid
  dir=$(need_dir "${1:-}")
  d=$dir/chromium
  command -v chromedriver >/dev/null || die "chromedriver is not installed; run '$0 install'"
  if [[ -s $d/chromedriver.pid ]] && pid_alive "$(cat "$d/chromedriver.pid")"; then
    die "already running in $d; stop it first"
  fi
  rm -rf "$d"
  mkdir -p "$d"
  port=$(free_port)
  # No --allowed-ips: with it chromedriver listens on every interface; without it, it
  # listens on loopback only and accepts only local clients, which is what we want.
  # setsid makes chromedriver a process-group leader, so stop can take its browsers too.
  # TMPDIR: profiles and Chromium's scratch dirs go under DIR instead of piling up in /tmp.
  mkdir -p "$d/tmp"
  TMPDIR=$d/tmp setsid chromedriver --port="$port" --log-path="$d/chromedriver.log" --readable-timestamp \
    </dev/null >"$d/chromedriver.out" 2>&1 &
  pid=$!
  echo "$pid" >"$d/chromedriver.pid"
  wait_for_pid "$pid" "curl -fsS http://127.0.0.1:$port/status | grep -q '\"ready\": *true'" 15 \
    "chromedriver on 127.0.0.1:$port" "$d/chromedriver.out" "$d/chromedriver.log"
  # Refuse to run if it ended up listening beyond loopback.
  if ss -Hltnp "sport = :$port" | grep -v -E '127\.0\.0\.1:|\[::1\]:' | grep -q .; then
    stop "$dir"
    die "chromedriver listens on a non-loopback address"
  fi

  env_set "$dir" WEBDRIVER_URL "http://127.0.0.1:$port"
  env_set "$dir" WEBDRIVER_PORT "$port"
  env_set "$dir" CHROMIUM_BINARY "$(command -v chromium)"
  env_set "$dir" CHROMIUM_ARGS "$CHROMIUM_ARGS"
  env_set "$dir" CHROMEDRIVER_PID_FILE "$d/chromedriver.pid"
  env_set "$dir" CHROMEDRIVER_LOG "$d/chromedriver.log"
  log "ready on http://127.0.0.1:$port"
}

stop() {
  local dir d pid
  dir=$(need_dir "${1:-}")
  d=$dir/chromium
  if [[ -s $d/chromedriver.pid ]]; then
    pid=$(cat "$d/chromedriver.pid")
    # Browsers a test forgot to close are in chromedriver's process group: end them too.
    kill -TERM -- "-$pid" 2>/dev/null || true
    stop_pid "$pid" chromedriver 10
    local deadline=$((SECONDS + 10))
    while group_alive "$pid"; do
      if ((SECONDS >= deadline)); then
        kill -KILL -- "-$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    rm -f "$d/chromedriver.pid"
  fi
  env_unset "$dir" "${ENV_KEYS[@]}"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) usage_exit "$0 install | start DIR | stop DIR" ;;
esac
