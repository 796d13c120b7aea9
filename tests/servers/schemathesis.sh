#!/usr/bin/env bash
# schemathesis (PyPI, pinned below) for the accounting API's property-based test
# (tests/accounting_schemathesis.rs). Not a server: a CLI in its own virtual environment.
#
#   schemathesis.sh install   # python3-venv from Debian if missing, then the venv (once)
#   schemathesis.sh path      # print the path of the `schemathesis` executable
#
# The venv lives in tests/servers/schemathesis/venv (ignored by git). A version change
# here makes `install` rebuild it.
SERVER_NAME=schemathesis
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION=4.32.5
APP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/schemathesis
VENV=$APP_DIR/venv
BIN=$VENV/bin/schemathesis

installed() {
  [[ -x $BIN && "$(cat "$VENV/.version" 2>/dev/null)" == "$VERSION" ]]
}

install() {
  installed && return 0
  ensure_pkgs python3-venv
  rm -rf "$VENV"
  mkdir -p "$APP_DIR"
  log "creating $VENV with schemathesis $VERSION"
  /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2 \
    || die "pip install schemathesis==$VERSION failed"
  "$BIN" --version >/dev/null || die "schemathesis does not run"
  echo "$VERSION" >"$VENV/.version"
}

case "${1:-}" in
  install) install ;;
  path)
    installed || die "schemathesis $VERSION is not installed; run '$0 install'"
    echo "$BIN"
    ;;
  *) usage_exit "$0 install | path" ;;
esac
