# shellcheck shell=bash
# Shared helpers for the real-server scripts in tests/servers/. Source it; do not run it.
#
# Conventions every server script follows:
#   SCRIPT install        install packages (idempotent, quiet when nothing is missing)
#   SCRIPT start DIR ...  create everything under DIR, bind 127.0.0.1 only, wait until ready,
#                         then record KEY=VALUE lines in DIR/env
#   SCRIPT stop DIR ...   stop the server and wait until its processes are gone
# Any failure exits non-zero with a message on stderr: a test must never skip silently.

set -euo pipefail

# The system interpreter: the pyenv shim on PATH may be missing in CI or slow to start.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=python3; fi

die() {
  echo "error: ${SERVER_NAME:-${0##*/}}: $*" >&2
  exit 1
}

log() {
  echo "${SERVER_NAME:-${0##*/}}: $*" >&2
}

# ensure_pkgs PKG... — install only the Debian packages that are not installed yet.
# `apt-get update` runs at most once per run (exported so nested scripts share it) and
# only when something is actually missing. The lock timeout lets two installs queue.
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]]; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
  if [[ -z "${HPCGATE_APT_UPDATED:-}" ]]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null || die "apt-get update failed"
    export HPCGATE_APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# free_port — print a TCP port on 127.0.0.1 that the kernel reports free right now.
# (There is a small window before the server binds it; ports come from the ephemeral
# range in random order, so two concurrent starts practically never draw the same one.)
free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# port_in_use PORT — true if something listens on 127.0.0.1:PORT (or any address).
port_in_use() {
  ss -Hltn "sport = :$1" | grep -q .
}

# wait_for CMD TIMEOUT_S DESCRIPTION [LOGFILE...] — poll CMD (a shell string, run with
# output discarded) every 0.1 s until it succeeds. On timeout print the tail of each
# LOGFILE and die, so the reason a server did not come up is in the test output.
wait_for() {
  _wait_for "" "$@"
}

# wait_for_pid PID CMD TIMEOUT_S DESCRIPTION [LOGFILE...] — like wait_for, but fail at once
# (not after the timeout) if process PID exits first: a server that cannot start says why.
wait_for_pid() {
  _wait_for "$@"
}

_wait_for() {
  local pid=$1 cmd=$2 timeout=$3 desc=$4
  shift 4
  local deadline=$((SECONDS + timeout)) why=""
  until eval "$cmd" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! pid_alive "$pid"; then
      why="the process (pid $pid) exited while waiting for $desc"
    elif ((SECONDS >= deadline)); then
      why="timed out after ${timeout}s waiting for $desc"
    fi
    if [[ -n $why ]]; then
      echo "error: ${SERVER_NAME:-${0##*/}}: $why" >&2
      local f
      for f in "$@"; do
        echo "----- last lines of $f -----" >&2
        tail -n 40 "$f" >&2 2>/dev/null || echo "(cannot read $f)" >&2
      done
      exit 1
    fi
    sleep 0.1
  done
}

# pid_alive PID — true while PID exists and is not a zombie. A daemon started from a
# script that has exited is reparented to PID 1 and may linger as a zombie until reaped;
# for our purposes it is gone.
pid_alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# group_alive PGID — true while any non-zombie process is in process group PGID.
group_alive() {
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop_pid PID DESCRIPTION [TIMEOUT_S] — SIGTERM, wait, then SIGKILL as a last resort.
# Returns once the process is gone.
stop_pid() {
  local pid=$1 desc=$2 timeout=${3:-20}
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$desc (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      pid_alive "$pid" && die "$desc (pid $pid) survived SIGKILL"
      return 0
    fi
    sleep 0.1
  done
}

# stop_pidfile FILE DESCRIPTION [TIMEOUT_S] — stop_pid on the pid recorded in FILE, if any.
stop_pidfile() {
  local file=$1
  [[ -s "$file" ]] || return 0
  stop_pid "$(head -n1 "$file" | tr -d '[:space:]')" "${@:2}"
}

# need_dir DIR — DIR must be an existing directory; print its absolute path.
need_dir() {
  [[ -n "${1:-}" ]] || die "missing DIR argument"
  [[ -d "$1" ]] || mkdir -p "$1" || die "cannot create $1"
  (cd "$1" && pwd -P)
}

# env_set DIR KEY VALUE — record KEY=VALUE in DIR/env, replacing an earlier KEY.
# Several servers share one DIR/env (and may start concurrently), hence the lock.
# Values must not need quoting, so tests can parse the file line by line and shells
# can source it as is.
env_set() {
  local dir=$1 key=$2 value=$3
  [[ "$key" =~ ^[A-Z][A-Z0-9_]*$ ]] || die "bad env key '$key'"
  [[ "$value" =~ ^[A-Za-z0-9_./:@=,+%-]*$ ]] || die "env value for $key needs quoting: '$value'"
  (
    flock 9
    local tmp="$dir/env.tmp.$$"
    { grep -v "^$key=" "$dir/env" 2>/dev/null || true; echo "$key=$value"; } >"$tmp"
    mv "$tmp" "$dir/env"
  ) 9>"$dir/.env.lock"
}

# env_unset DIR KEY... — drop keys from DIR/env (on stop, so stale URLs are not reused).
env_unset() {
  local dir=$1 key
  shift
  [[ -f "$dir/env" ]] || return 0
  (
    flock 9
    local tmp="$dir/env.tmp.$$"
    cp "$dir/env" "$tmp"
    for key in "$@"; do
      grep -v "^$key=" "$tmp" >"$tmp.2" || true
      mv "$tmp.2" "$tmp"
    done
    mv "$tmp" "$dir/env"
  ) 9>"$dir/.env.lock"
}

# allow_traverse DIR — let non-root service users (postgres, slurm job users) reach
# subdirectories of a test-owned DIR, which mktemp creates with mode 0700. Adds only
# the search bit (for group and others: munged checks both), never read.
allow_traverse() {
  chmod go+x "$1"
}

# usage_exit TEXT — print usage and fail.
usage_exit() {
  echo "usage: $*" >&2
  exit 2
}
