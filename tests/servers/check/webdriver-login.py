#!/usr/bin/env python3
"""Log in at the test IdP in headless Chromium through chromedriver (W3C WebDriver, stdlib only).

usage: webdriver-login.py ENV_FILE USER PASSWORD

ENV_FILE must hold the keys of both chromium.sh and oidc.sh. Opens the authorization URL, types
into #username and #password, clicks #submit, waits until the browser is sent to the first
redirect URI, exchanges the code and prints the ID token's claims as JSON. This is the same
flow a fantoccini test drives.
"""
import base64
import hashlib
import json
import secrets
import sys
import time
import urllib.parse
import urllib.request


def load_env(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    env = load_env(sys.argv[1])
    user, password = sys.argv[2], sys.argv[3]
    wd = env["WEBDRIVER_URL"]

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(wd + path, method=method, data=data,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)["value"]

    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": env["CHROMIUM_BINARY"], "args": env["CHROMIUM_ARGS"].split(",")}}}}
    started = time.time()
    sid = call("POST", "/session", caps)["sessionId"]
    try:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect = env["OIDC_REDIRECT_URIS"].split(",")[0]
        query = urllib.parse.urlencode({
            "client_id": env["OIDC_CLIENT_ID"], "response_type": "code", "scope": "openid",
            "state": "wd1", "code_challenge": challenge, "code_challenge_method": "S256",
            "redirect_uri": redirect})
        call("POST", f"/session/{sid}/url", {"url": f"{env['OIDC_ISSUER']}/auth?{query}"})

        def element(css):
            found = call("POST", f"/session/{sid}/element", {"using": "css selector", "value": css})
            return next(iter(found.values()))

        call("POST", f"/session/{sid}/element/{element('#username')}/value", {"text": user})
        call("POST", f"/session/{sid}/element/{element('#password')}/value", {"text": password})
        call("POST", f"/session/{sid}/element/{element('#submit')}/click", {})
        url = ""
        for _ in range(150):
            url = call("GET", f"/session/{sid}/url")
            if url.startswith(redirect):
                break
            time.sleep(0.1)
        else:
            sys.exit(f"browser did not reach {redirect}; it is at {url}")
        code = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["code"][0]
    finally:
        call("DELETE", f"/session/{sid}")

    basic = base64.b64encode(f"{env['OIDC_CLIENT_ID']}:{env['OIDC_CLIENT_SECRET']}".encode()).decode()
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": redirect, "code_verifier": verifier}).encode()
    req = urllib.request.Request(f"{env['OIDC_ISSUER']}/token", data=body,
                                 headers={"authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        tokens = json.load(r)
    payload = tokens["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    print(json.dumps({"seconds": round(time.time() - started, 1), "id_token_claims": claims}))


if __name__ == "__main__":
    main()
