#!/usr/bin/env python3
"""Print the header and claims of a JWT (no verification). usage: jwt-claims.py TOKEN | -  (- reads a
token response JSON on stdin and prints every *_token in it that is a JWT)."""
import base64
import json
import sys


def part(token, i):
    p = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


if sys.argv[1:] == ["-"]:
    response = json.load(sys.stdin)
    tokens = {k: v for k, v in response.items() if k.endswith("_token") and v.count(".") == 2}
else:
    tokens = {"token": sys.argv[1]}
for name, token in tokens.items():
    print(json.dumps({"name": name, "header": part(token, 0), "claims": part(token, 1)}))
