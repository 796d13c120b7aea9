#!/usr/bin/env bash
# OpenID Connect provider (npm oidc-provider 8.8.1, see oidc/server.mjs) for the OIDC tests.
#
#   oidc.sh install         # npm ci in tests/servers/oidc (only when node_modules is missing)
#   oidc.sh start DIR       # state in DIR/oidc/, keys in DIR/env
#   oidc.sh stop DIR
#
# Inputs (all optional, from the environment of `start`):
#   OIDC_REDIRECT_URIS               comma-separated (default http://127.0.0.1:8080/callback);
#                                    can be replaced later: POST $OIDC_ISSUER/test/client
#   OIDC_POST_LOGOUT_REDIRECT_URIS   comma-separated (default http://127.0.0.1:8080/)
#   OIDC_KID                         kid of the first signing key (default test-key-1)
#   OIDC_RESOURCE                    access-token audience (default urn:hpcgate)
#   OIDC_ACCESS_TOKEN_TTL            seconds (default 3600)
#   OIDC_PORT                        listen on this port (default: a free one), e.g. to
#                                    bring an IdP back where a gateway expects it
#   ALICE_PASSWORD, BOB_PASSWORD     same defaults as slapd.sh, so one DIR/env serves both
SERVER_NAME=oidc
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/oidc" && pwd)
ENV_KEYS=(OIDC_ISSUER OIDC_PORT OIDC_CLIENT_ID OIDC_CLIENT_SECRET OIDC_RESOURCE OIDC_KID
  OIDC_REDIRECT_URIS OIDC_POST_LOGOUT_REDIRECT_URIS OIDC_DISCOVERY_URL OIDC_JWKS_URL
  OIDC_ROTATE_KEY_URL OIDC_LOG OIDC_PID_FILE)

install() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_pkgs nodejs npm
  fi
  if [[ ! -f $APP_DIR/node_modules/oidc-provider/package.json ]]; then
    log "npm ci in $APP_DIR"
    (cd "$APP_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed"
  fi
}

start() {
  local dir d port issuer pid
  dir=$(need_dir "${1:-}")
  d=$dir/oidc
  [[ -f $APP_DIR/node_modules/oidc-provider/package.json ]] \
    || die "oidc-provider is not installed; run '$0 install'"
  if [[ -s $d/oidc.pid ]] && pid_alive "$(cat "$d/oidc.pid")"; then
    die "already running in $d; stop it first"
  fi
  rm -rf "$d"
  mkdir -p "$d"
  port=${OIDC_PORT:-$(free_port)}
  issuer=http://127.0.0.1:$port

  export PORT=$port
  export OIDC_CLIENT_ID=${OIDC_CLIENT_ID:-gateway}
  export OIDC_CLIENT_SECRET=${OIDC_CLIENT_SECRET:-gateway-secret}
  export OIDC_KID=${OIDC_KID:-test-key-1}
  export OIDC_RESOURCE=${OIDC_RESOURCE:-urn:hpcgate}
  export OIDC_REDIRECT_URIS=${OIDC_REDIRECT_URIS:-http://127.0.0.1:8080/callback}
  export OIDC_POST_LOGOUT_REDIRECT_URIS=${OIDC_POST_LOGOUT_REDIRECT_URIS:-http://127.0.0.1:8080/}
  export ALICE_PASSWORD=${ALICE_PASSWORD:-alice-pw-1}
  export BOB_PASSWORD=${BOB_PASSWORD:-bob-pw-2}
  # NODE_ENV=production would turn on secure-cookie checks that need https.
  setsid node "$APP_DIR/server.mjs" </dev/null >"$d/oidc.log" 2>&1 &
  pid=$!
  echo "$pid" >"$d/oidc.pid"
  wait_for_pid "$pid" "curl -fsS $issuer/.well-known/openid-configuration" 20 \
    "oidc provider on $issuer" "$d/oidc.log"

  env_set "$dir" OIDC_ISSUER "$issuer"
  env_set "$dir" OIDC_PORT "$port"
  env_set "$dir" OIDC_CLIENT_ID "$OIDC_CLIENT_ID"
  env_set "$dir" OIDC_CLIENT_SECRET "$OIDC_CLIENT_SECRET"
  env_set "$dir" OIDC_RESOURCE "$OIDC_RESOURCE"
  env_set "$dir" OIDC_KID "$OIDC_KID"
  env_set "$dir" OIDC_REDIRECT_URIS "$OIDC_REDIRECT_URIS"
  env_set "$dir" OIDC_POST_LOGOUT_REDIRECT_URIS "$OIDC_POST_LOGOUT_REDIRECT_URIS"
  env_set "$dir" OIDC_DISCOVERY_URL "$issuer/.well-known/openid-configuration"
  env_set "$dir" OIDC_JWKS_URL "$issuer/jwks"
  env_set "$dir" OIDC_ROTATE_KEY_URL "$issuer/test/rotate-key"
  env_set "$dir" OIDC_LOG "$d/oidc.log"
  env_set "$dir" OIDC_PID_FILE "$d/oidc.pid"
  env_set "$dir" ALICE_PASSWORD "$ALICE_PASSWORD"
  env_set "$dir" BOB_PASSWORD "$BOB_PASSWORD"
  log "ready on $issuer"
}

stop() {
  local dir d
  dir=$(need_dir "${1:-}")
  d=$dir/oidc
  stop_pidfile "$d/oidc.pid" "oidc provider" 10
  rm -f "$d/oidc.pid"
  env_unset "$dir" "${ENV_KEYS[@]}"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) usage_exit "$0 install | start DIR | stop DIR" ;;
esac
