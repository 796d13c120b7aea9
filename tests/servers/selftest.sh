#!/usr/bin/env bash
# Self-test of the server scripts in this directory, with real requests.
#
#   selftest.sh [SERVER...]     SERVER: slapd postgres redis oidc chromium prometheus slurm
#                               (default: all, in that order)
#
# For each server: install; then two rounds of: start two instances at once in two fresh
# DIRs, prove each works with a real request, stop both, and check that every port they
# used is closed and every pid they recorded is gone. Prints timings and a closing line
# "N passed, N failed". Needs root (it installs packages). Loopback traffic only.
# shellcheck disable=SC1091  # sources DIR/env files that exist only at run time
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SERVER_NAME=selftest
# shellcheck source=lib.sh
source "$HERE/lib.sh"

ALL=(slapd postgres redis oidc chromium prometheus slurm)
PASSED=0
FAILED=0

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# has PATTERN... — grep that reads all its input (grep -q may exit early and, with pipefail,
# fail the writer with SIGPIPE).
has() { grep "$@" >/dev/null; }
must_fail() {
  if "$@" >/dev/null 2>&1; then
    echo "expected to fail: $*" >&2
    return 1
  fi
}
envget() { (set +u; source "$1/env"; eval "printf %s \"\${$2}\""); }

# ---- per-server start / check / stop -------------------------------------------------------

start_one() {
  case $1 in
    prometheus)
      make_backfill "$2/hist.om"
      "$HERE/prometheus.sh" backfill "$2" long "$2/hist.om"
      "$HERE/prometheus.sh" start "$2" long
      PROM_REMOTE_WRITE_URL=$(envget "$2" PROM_LONG_REMOTE_WRITE_URL) "$HERE/prometheus.sh" start "$2" short
      ;;
    chromium)
      "$HERE/oidc.sh" start "$2"
      "$HERE/chromium.sh" start "$2"
      ;;
    *) "$HERE/$1.sh" start "$2" ;;
  esac
}

stop_one() {
  case $1 in
    prometheus)
      # The remote-write sender first: with its receiver gone it would wait 60 s.
      "$HERE/prometheus.sh" stop "$2" short
      "$HERE/prometheus.sh" stop "$2" long
      ;;
    chromium)
      "$HERE/chromium.sh" stop "$2"
      "$HERE/oidc.sh" stop "$2"
      ;;
    *) "$HERE/$1.sh" stop "$2" ;;
  esac
}

check_slapd() (
  source "$1/env"
  [[ "$(ldapwhoami -x -H "$LDAP_URL" -D "$ALICE_DN" -w "$ALICE_PASSWORD")" == "dn:$ALICE_DN" ]]
  must_fail ldapwhoami -x -H "$LDAP_URL" -D "$BOB_DN" -w wrong
  ldapsearch -x -LLL -H "$LDAP_URL" -D "$LDAP_BIND_DN" -w "$LDAP_BIND_PASSWORD" -b "$LDAP_GROUP_BASE" \
    "(member=$BOB_DN)" cn | has -x "cn: hpc-users"
  if [[ $LDAP_MEMBEROF == 1 ]]; then
    ldapsearch -x -LLL -H "$LDAP_URL" -D "$LDAP_BIND_DN" -w "$LDAP_BIND_PASSWORD" -b "$ALICE_DN" \
      -s base memberOf | has -i "memberOf: cn=hpc-admins,$LDAP_GROUP_BASE"
  fi
  # The log shows each simple bind, so tests can count them.
  grep -q "BIND dn=\"$ALICE_DN\"" "$LDAP_LOG"
)

check_postgres() (
  source "$1/env"
  [[ "$(psql -X -At "$DATABASE_URL" -c 'select current_database()')" == hpcgate ]]
  psql -X -q "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'create table t (x int); insert into t values (1)'
  [[ "$(psql -X -At "$DATABASE_URL" -c 'show fsync')" == off ]]
)

check_redis() (
  source "$1/env"
  [[ "$(redis-cli -u "$REDIS_URL" ping)" == PONG ]]
  redis-cli -u "$REDIS_URL" set k v >/dev/null
  [[ "$(redis-cli -u "$REDIS_URL" get k)" == v ]]
)

check_oidc() (
  source "$1/env"
  local r kid1 kid2
  curl -fsS "$OIDC_DISCOVERY_URL" | has '"end_session_endpoint"'
  # client_credentials: an RS256 JWT for urn:hpcgate
  r=$(curl -fsS -u "$OIDC_CLIENT_ID:$OIDC_CLIENT_SECRET" -d grant_type=client_credentials -d scope=api "$OIDC_ISSUER/token")
  "$HERE/check/jwt-claims.py" - <<<"$r" | has "\"aud\": \"$OIDC_RESOURCE\""
  # wrong secret is refused
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -u "$OIDC_CLIENT_ID:nope" -d grant_type=client_credentials "$OIDC_ISSUER/token")" == 401 ]]
  # auth code + PKCE with curl; claims in ID and access token
  r=$("$HERE/check/oidc-login.sh" "$1/env" alice "$ALICE_PASSWORD")
  "$HERE/check/jwt-claims.py" - <<<"$r" >"$1/alice-claims.json"
  [[ $(grep -c '"groups": \["hpc-admins", "hpc-users"\]' "$1/alice-claims.json") == 2 ]]
  must_fail "$HERE/check/oidc-login.sh" "$1/env" alice wrong-password
  # refresh token works
  local rt
  rt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["refresh_token"])' "$r")
  curl -fsS -u "$OIDC_CLIENT_ID:$OIDC_CLIENT_SECRET" -d grant_type=refresh_token -d "refresh_token=$rt" \
    "$OIDC_ISSUER/token" | has access_token
  # key rotation: new kid signs, old kid still published
  kid1=$(curl -fsS -X POST "$OIDC_ROTATE_KEY_URL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["kid"])')
  kid2=$(curl -fsS "$OIDC_JWKS_URL" | python3 -c 'import json,sys; print(",".join(k["kid"] for k in json.load(sys.stdin)["keys"]))')
  [[ $kid2 == "$kid1,$OIDC_KID" ]]
  r=$(curl -fsS -u "$OIDC_CLIENT_ID:$OIDC_CLIENT_SECRET" -d grant_type=client_credentials "$OIDC_ISSUER/token")
  "$HERE/check/jwt-claims.py" - <<<"$r" | has "\"kid\": \"$kid1\""
)

check_chromium() (
  source "$1/env"
  "$HERE/check/webdriver-login.py" "$1/env" bob "$BOB_PASSWORD" | has '"preferred_username": "bob"'
)

make_backfill() {
  # Three hours of two counters ending now, one sample a minute.
  "$PY" - "$(date +%s)" >"$1" <<'EOF'
import sys
now = int(sys.argv[1])
print("# HELP selftest_cpu_seconds_total Backfilled by selftest.sh")
print("# TYPE selftest_cpu_seconds_total counter")
for user, rate in (("alice", 1), ("bob", 2)):
    for i in range(180):
        t = now - 3 * 3600 + i * 60
        print(f'selftest_cpu_seconds_total{{job="slurm-job",user="{user}"}} {i * 60 * rate} {t}')
print("# EOF")
EOF
}

check_prometheus() (
  source "$1/env"
  local at
  at=$(($(date +%s) - 3600))
  # backfilled history, queried at an explicit past time
  curl -fsS -G "$PROM_LONG_URL/api/v1/query" --data-urlencode 'query=rate(selftest_cpu_seconds_total{user="bob"}[5m])' \
    --data-urlencode "time=$at" | has '"value":\[[0-9.]*,"2"\]'
  # the static file, scraped with honor_labels
  printf 'selftest_mem_bytes{job="slurm-job",user="alice"} 4096\n' >"$PROM_SHORT_METRICS_FILE.tmp"
  mv "$PROM_SHORT_METRICS_FILE.tmp" "$PROM_SHORT_METRICS_FILE"
  wait_for "curl -fsS -G '$PROM_SHORT_URL/api/v1/query' --data-urlencode 'query=selftest_mem_bytes{job=\"slurm-job\"}' | grep -q 4096" \
    10 "scraped series in short"
  # remote write from short to long
  wait_for "curl -fsS -G '$PROM_LONG_URL/api/v1/query' --data-urlencode 'query=selftest_mem_bytes' | grep -q 4096" \
    20 "remote-written series in long"
)

check_slurm() (
  source "$1/env"
  export SLURM_CONF
  local ta tb body id
  ta=$("$HERE/slurm-jwt.py" "$SLURM_JWT_KEY" alice)
  tb=$("$HERE/slurm-jwt.py" "$SLURM_JWT_KEY" bob)
  curl -fsS -H "X-SLURM-USER-NAME: alice" -H "X-SLURM-USER-TOKEN: $ta" "$SLURMRESTD_URL/slurm/v0.0.38/ping" | has '"UP"'
  body=$(printf '{"job":{"name":"selftest","current_working_directory":"%s","environment":{"PATH":"/usr/bin:/bin"},"standard_output":"%s/selftest-%%j.out"},"script":"#!/bin/bash\\nid -un\\n"}' \
    "$SLURM_WORK_DIR" "$SLURM_WORK_DIR")
  id=$(curl -fsS -H "X-SLURM-USER-NAME: alice" -H "X-SLURM-USER-TOKEN: $ta" -H 'content-type: application/json' \
    -d "$body" "$SLURMRESTD_URL/slurm/v0.0.38/job/submit" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  wait_for "grep -qx alice '$SLURM_WORK_DIR/selftest-$id.out'" 30 "job $id to run as alice"
  # PrivateData=jobs: bob does not see alice's job
  curl -fsS -H "X-SLURM-USER-NAME: bob" -H "X-SLURM-USER-TOKEN: $tb" "$SLURMRESTD_URL/slurm/v0.0.38/jobs" \
    | python3 -c 'import json,sys; assert json.load(sys.stdin)["jobs"] == []'
  # the job reaches accounting
  wait_for "curl -fsS -H 'X-SLURM-USER-NAME: alice' -H 'X-SLURM-USER-TOKEN: $ta' \
      '$SLURMRESTD_URL/slurmdb/v0.0.38/jobs?start_time=now-1hours' | grep -q COMPLETED" 30 "job $id in slurmdbd"
)

# ---- harness ---------------------------------------------------------------------------------

# What an instance leaves behind if stop is broken: its ports and its pids.
ports_of() { { grep -Eo '127\.0\.0\.1:[0-9]+' "$1/env" || true; } | cut -d: -f2 | sort -u; }
pids_of() {
  local f
  { grep -E '_PID_FILE=' "$1/env" || true; } | cut -d= -f2 | while read -r f; do
    if [[ -s $f ]]; then head -n1 "$f"; fi
  done
}

round() {
  local server=$1 n=$2 a b t ok=1 p
  a=$TMP_ROOT/$server-$n-a
  b=$TMP_ROOT/$server-$n-b
  mkdir -p "$a" "$b"
  t=$(now)
  start_one "$server" "$a" >"$a/start.log" 2>&1 &
  local pa=$!
  start_one "$server" "$b" >"$b/start.log" 2>&1 &
  local pb=$!
  wait "$pa" || { ok=0; echo "  start in $a failed:"; tail -n 30 "$a/start.log"; }
  wait "$pb" || { ok=0; echo "  start in $b failed:"; tail -n 30 "$b/start.log"; }
  echo "  round $n: two instances started together in $(since "$t") s"
  if ((ok)); then
    for d in "$a" "$b"; do
      t=$(now)
      # A fresh bash for each check: checks rely on errexit, which bash ignores inside any
      # function called from an `if` or `&&` (as this one is).
      if bash -c 'set -eEuo pipefail
          source "$1"
          trap '\''echo "failed (line $LINENO): $BASH_COMMAND" >&2'\'' ERR
          "check_$2" "$3"' check "$SELF" "$server" "$d" >"$d/check.log" 2>&1; then
        echo "  round $n: check in $d passed in $(since "$t") s"
      else
        ok=0
        echo "  round $n: check in $d FAILED:"
        tail -n 30 "$d/check.log"
      fi
    done
  fi
  local ports pids
  ports=$( (ports_of "$a"; ports_of "$b") 2>/dev/null | sort -u)
  pids=$( (pids_of "$a"; pids_of "$b") 2>/dev/null)
  t=$(now)
  stop_one "$server" "$a" >"$a/stop.log" 2>&1 || { ok=0; cat "$a/stop.log"; }
  stop_one "$server" "$b" >"$b/stop.log" 2>&1 || { ok=0; cat "$b/stop.log"; }
  echo "  round $n: both stopped in $(since "$t") s"
  for p in $ports; do
    if port_in_use "$p"; then ok=0; echo "  port $p still in use after stop"; fi
  done
  for p in $pids; do
    if pid_alive "$p"; then ok=0; echo "  pid $p still running after stop"; fi
  done
  ((ok))
}

run_server() {
  local server=$1 t
  echo "== $server"
  t=$(now)
  "$HERE/$server.sh" install || return 1
  [[ $server == chromium ]] && { "$HERE/oidc.sh" install || return 1; }
  echo "  install: $(since "$t") s"
  round "$server" 1 && round "$server" 2
}

main() {
  local servers=("$@") s
  [[ ${#servers[@]} -gt 0 ]] || servers=("${ALL[@]}")
  for s in "${servers[@]}"; do
    [[ " ${ALL[*]} " == *" $s "* ]] || die "unknown server '$s' (known: ${ALL[*]})"
  done
  TMP_ROOT=$(mktemp -d /tmp/hpcgate-servers-selftest.XXXXXX)
  # Service users (postgres, slurmrest, job users) must pass through it, as through /tmp.
  chmod 0711 "$TMP_ROOT"
  for s in "${servers[@]}"; do
    if run_server "$s"; then
      echo "ok: $s"
      PASSED=$((PASSED + 1))
    else
      echo "FAILED: $s (files in $TMP_ROOT)"
      FAILED=$((FAILED + 1))
    fi
  done
  ((FAILED)) || rm -rf "$TMP_ROOT"
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

# Run main unless sourced (each check runs in a bash that sources this file).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
