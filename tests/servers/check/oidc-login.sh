#!/usr/bin/env bash
# Log in at the test IdP with curl only (authorization code + PKCE S256) and print the token
# endpoint's JSON response (access_token, id_token, refresh_token).
#
#   check/oidc-login.sh ENV_FILE USER PASSWORD
#
# ENV_FILE is a DIR/env written by oidc.sh. Set JAR=FILE to keep the IdP session cookies (for a
# following logout). Exits non-zero if any step does not go as a real browser's would.
#
# With AUTH_URL=URL, an authorization request a relying party made (the gateway's redirect from
# /auth/login), that request is followed instead of one of our own, and the URL the IdP sends
# the browser back to (the relying party's callback, with code and state) is printed: the
# relying party exchanges the code itself, as after a real browser's login.
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 ENV_FILE USER PASSWORD" >&2; exit 2; }
# shellcheck disable=SC1090
. "$1"
user=$2 password=$3
fail() { echo "oidc-login: $*" >&2; exit 1; }
jar=${JAR:-$(mktemp)}
[[ -n ${JAR:-} ]] || trap 'rm -f "$jar"' EXIT
c() { curl -sS -c "$jar" -b "$jar" "$@"; }
urlenc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

verifier=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
challenge=$(printf %s "$verifier" | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')
redirect=${OIDC_REDIRECT_URIS%%,*}
state=st-$RANDOM
auth_url="$OIDC_ISSUER/auth?client_id=$OIDC_CLIENT_ID&response_type=code&scope=openid&state=$state&nonce=n-$RANDOM&code_challenge=$challenge&code_challenge_method=S256&redirect_uri=$(urlenc "$redirect")"
if [[ -n ${AUTH_URL:-} ]]; then
  [[ $AUTH_URL == "$OIDC_ISSUER/auth?"* ]] || fail "AUTH_URL is not this IdP's authorization endpoint"
  auth_url=$AUTH_URL
  redirect=$(python3 -c 'import sys, urllib.parse as u; print(u.parse_qs(u.urlparse(sys.argv[1]).query)["redirect_uri"][0])' "$AUTH_URL")
fi

# 1. authorization request -> redirect to our login form
loc=$(c -o /dev/null -w '%{redirect_url}' "$auth_url")
[[ $loc == "$OIDC_ISSUER/interaction/"* ]] || fail "expected a redirect to the login form, got '$loc'"
# 2. the form
form=$(c "$loc")
for id in username password submit; do grep -q "id=\"$id\"" <<<"$form" || fail "login form has no #$id"; done
action=$(grep -o 'action="[^"]*"' <<<"$form" | head -n1 | cut -d'"' -f2)
# 3. submit credentials
out=$(c -o /dev/null -w '%{http_code} %{redirect_url}' --data-urlencode "username=$user" \
  --data-urlencode "password=$password" "$OIDC_ISSUER$action")
[[ $out == "303 "* ]] || fail "login rejected (HTTP ${out%% *})"
loc=${out#303 }
# 4. follow the IdP's own redirects (consent is automatic) until it sends us to redirect_uri
for _ in 1 2 3 4 5 6; do
  [[ $loc == "$OIDC_ISSUER"* ]] || break
  loc=$(c -o /dev/null -w '%{redirect_url}' "$loc")
done
[[ $loc == "$redirect"* ]] || fail "did not come back to $redirect: '$loc'"
if [[ -n ${AUTH_URL:-} ]]; then
  echo "$loc"
  exit 0
fi
code=$(python3 - "$loc" "$state" <<'EOF'
import sys, urllib.parse as u
q = u.parse_qs(u.urlparse(sys.argv[1]).query)
if q.get("state") != [sys.argv[2]] or "code" not in q:
    sys.exit(f"bad callback: {sys.argv[1]}")
print(q["code"][0])
EOF
)
# 5. code exchange with the PKCE verifier
curl -fsS -u "$OIDC_CLIENT_ID:$OIDC_CLIENT_SECRET" -d grant_type=authorization_code \
  --data-urlencode "code=$code" --data-urlencode "redirect_uri=$redirect" \
  --data-urlencode "code_verifier=$verifier" "$OIDC_ISSUER/token"
echo
