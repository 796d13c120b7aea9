#!/usr/bin/env python3
"""Mint a Slurm auth/jwt token: HS256 over the raw bytes of jwt_hs256.key.

usage: slurm-jwt.py KEY_FILE USER [LIFETIME_SECONDS]      (prints the token)

Slurm 22.05 reads the user from the `sun` claim; requests to slurmrestd carry it as
X-SLURM-USER-NAME: USER and X-SLURM-USER-TOKEN: <token>. A negative lifetime gives an
expired token, for tests of the rejection path.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key: bytes, user: str, lifetime: int) -> str:
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = b64(json.dumps({"exp": now + lifetime, "iat": now, "sun": user}, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        key = f.read()
    print(mint(key, sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 3600))
