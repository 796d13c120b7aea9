#!/usr/bin/env python3
"""hpcgate against nginx on loopback: requests per second, latency, CPU and memory.

Run through benches/load/run (which installs nginx, wrk and gnuplot and builds hpcgate).

Rows (each its own processes, started fresh for every measurement):
  a  direct           wrk -> upstream (the physical limit)
  b  nginx proxy      wrk -> nginx reverse proxy -> upstream
  c  nginx auth       wrk -> nginx + auth_request -> auth endpoint (its own nginx) ; -> upstream
  d  hpcgate none     wrk -> hpcgate, public route -> upstream
  e  hpcgate apikey   wrk -> hpcgate, API key (X-API-Key) -> upstream
  f  hpcgate jwt      wrk -> hpcgate, gateway JWT + Cedar policy + identity headers -> upstream

The upstream is nginx (1 worker) returning a 62-byte JSON body. Proxies get the same number
of workers (nginx worker_processes = hpcgate [server] threads = 1 or 2). Every combination of
transport (plain/TLS), connections and workers runs every row in turn (a b c d e f a b c ...),
for each round, so ratios come from side-by-side runs. Access logs are off for nginx and
hpcgate alike; hpcgate still writes its audit log (to a file) for authenticated rows, which
nginx has no equivalent of.
"""

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BODY = '{"status":"success","data":{"resultType":"vector","result":[]}}'[:62]
ROWS = ["a", "b", "c", "d", "e", "f"]
ROW_NAMES = {
    "a": "direct (no proxy)",
    "b": "nginx reverse proxy",
    "c": "nginx + auth_request",
    "d": "hpcgate, no auth",
    "e": "hpcgate, API key",
    "f": "hpcgate, JWT + Cedar + headers",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {timeout}s")


def descendants(pid):
    """pid and every process below it."""
    out = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return out
    for c in children:
        out.extend(descendants(int(c)))
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def status_kib(pids, key):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Proc:
    """A server process group, stopped on exit."""

    def __init__(self, args, what, port, env=None, cwd=None):
        self.what = what
        self.log = open(os.path.join(WORK, f"{what}.log"), "ab")
        self.p = subprocess.Popen(
            args, stdout=self.log, stderr=self.log, env=env, cwd=cwd, start_new_session=True
        )
        wait_port(port, self.p, what)

    def pids(self):
        return descendants(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


def nginx(name, conf_body, port, workers):
    path = os.path.join(WORK, f"{name}.conf")
    with open(path, "w") as f:
        f.write(
            f"worker_processes {workers};\ndaemon off;\nmaster_process on;\n"
            f"pid {WORK}/{name}.pid;\nerror_log {WORK}/{name}.err warn;\n"
            "events { worker_connections 8192; }\n"
            "http {\n  access_log off;\n  keepalive_requests 10000000;\n"
            f"  client_body_temp_path {WORK}/tmp; proxy_temp_path {WORK}/tmp;\n"
            f"  fastcgi_temp_path {WORK}/tmp; uwsgi_temp_path {WORK}/tmp; scgi_temp_path {WORK}/tmp;\n"
            f"{conf_body}\n}}\n"
        )
    return Proc(["nginx", "-c", path, "-e", f"{WORK}/{name}.err"], name, port)


def tls_listen(port):
    return (
        f"listen 127.0.0.1:{port} ssl;\n"
        f"    ssl_certificate {CERTS}/server.pem; ssl_certificate_key {CERTS}/server-key.pem;\n"
        "    ssl_protocols TLSv1.3; ssl_session_cache shared:tls:10m;\n"
    )


def start_upstream(ports):
    conf = (
        f"  server {{\n    listen 127.0.0.1:{ports['up']};\n    {tls_listen(ports['up_tls'])}"
        f"    location / {{ default_type application/json; return 200 '{BODY}'; }}\n  }}\n"
    )
    return nginx("upstream", conf, ports["up"], 1)


def start_auth(ports):
    # The smallest auth endpoint: a header check and the user's name back (SchedMD's
    # slurmrestd auth-proxy pattern runs a PHP script here).
    conf = (
        f"  server {{\n    listen 127.0.0.1:{ports['auth']};\n"
        "    location = /validate {\n"
        f"      if ($http_authorization != \"Bearer {AUTH_TOKEN}\") {{ return 401; }}\n"
        "      add_header X-User alice; return 200;\n    }\n  }\n"
    )
    return nginx("auth", conf, ports["auth"], 1)


def start_nginx_proxy(ports, workers, auth):
    up = f"upstream up {{ server 127.0.0.1:{ports['up']}; keepalive 512; }}\n"
    if auth:
        up += f"  upstream auth {{ server 127.0.0.1:{ports['auth']}; keepalive 512; }}\n"
        guard = (
            "      auth_request /_auth;\n      auth_request_set $user $upstream_http_x_user;\n"
            "      proxy_set_header X-Forwarded-User $user;\n"
        )
        auth_loc = (
            "    location = /_auth { internal; proxy_pass http://auth/validate;\n"
            "      proxy_pass_request_body off; proxy_set_header Content-Length \"\";\n"
            "      proxy_http_version 1.1; proxy_set_header Connection \"\"; }\n"
        )
    else:
        guard, auth_loc = "", ""
    conf = (
        f"  {up}  server {{\n    listen 127.0.0.1:{ports['px']};\n    {tls_listen(ports['px_tls'])}"
        f"    location / {{\n{guard}      proxy_pass http://up;\n"
        "      proxy_http_version 1.1; proxy_set_header Connection \"\";\n    }\n"
        f"{auth_loc}  }}\n"
    )
    return nginx("proxy-auth" if auth else "proxy", conf, ports["px"], workers)


def hpcgate_config(ports, workers, row):
    auth = {"d": '["public"]', "e": '["keys"]', "f": '["tokens"]'}[row]
    return f"""
[server]
state_dir = "{WORK}/hpcgate-state"
threads = {workers}

[logging]
level = "warn"
access_log = false

[[listeners]]
address = "127.0.0.1:{ports['px']}"
allow_plaintext = true

[[listeners]]
address = "127.0.0.1:{ports['px_tls']}"
tls_cert = "{CERTS}/server.pem"
tls_key = "{CERTS}/server-key.pem"

[authenticators.public]
type = "none"

[authenticators.local]
type = "static"
users_file = "{WORK}/users.toml"

[authenticators.keys]
type = "api_key"

[authenticators.tokens]
type = "gateway_jwt"

[tokens]
authenticators = ["local"]
ttl = "24h"

[audit]
path = "{WORK}/audit.log"

[pools.up]
backends = ["http://127.0.0.1:{ports['up']}"]

[[routes]]
name = "bench"
path_prefix = "/"
pool = "up"
authenticators = {auth}
"""


def start_hpcgate(ports, workers, row):
    path = os.path.join(WORK, f"hpcgate-{row}.toml")
    with open(path, "w") as f:
        f.write(hpcgate_config(ports, workers, row))
    return Proc([HPCGATE, "serve", "--config", path] + SERVE_FLAGS, f"hpcgate-{row}", ports["px"])


def setup_credentials(ports):
    """An API key (row e) and a gateway token (row f) for alice."""
    global API_KEY, JWT
    pw = "bench-password"
    h = subprocess.run([HPCGATE, "hash-password"], input=pw.encode(), capture_output=True, check=True)
    with open(os.path.join(WORK, "users.toml"), "w") as f:
        f.write(
            f'[[users]]\nname = "alice"\npassword_hash = "{h.stdout.decode().strip()}"\n'
            'groups = ["hpc-users"]\n'
        )
    cfg = os.path.join(WORK, "hpcgate-e.toml")
    with open(cfg, "w") as f:
        f.write(hpcgate_config(ports, 1, "e"))
    out = subprocess.run(
        [HPCGATE, "apikey", "create", "--config", cfg, "--user", "alice", "--name", "bench", "--json"],
        capture_output=True,
        check=True,
    )
    API_KEY = json.loads(out.stdout)["key"]
    g = start_hpcgate(ports, 1, "f")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{ports['px']}/auth/token", method="POST")
        req.add_header("Authorization", "Basic " + base64.b64encode(f"alice:{pw}".encode()).decode())
        JWT = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
    finally:
        g.stop()


def headers_for(row):
    if row == "c":
        return ["-H", f"Authorization: Bearer {AUTH_TOKEN}"]
    if row == "e":
        return ["-H", f"X-API-Key: {API_KEY}"]
    if row == "f":
        return ["-H", f"Authorization: Bearer {JWT}"]
    return []


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if m and m.group(2) == "m":
        return float(m.group(1)) * 60_000
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000


def wrk(url, conns, seconds, headers, script=None):
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", *headers, *extra, url],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"wrk failed: {out.stderr}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    # Anchored: "68.50%" in the thread stats must not read as the 50th percentile.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def measure(row, tls, conns, workers, ports, seconds, script=None):
    procs = []
    if row == "a":
        port = ports["up_tls"] if tls else ports["up"]
    else:
        port = ports["px_tls"] if tls else ports["px"]
        if row == "b":
            procs.append(start_nginx_proxy(ports, workers, auth=False))
        elif row == "c":
            procs.append(start_auth(ports))
            procs.append(start_nginx_proxy(ports, workers, auth=True))
        else:
            procs.append(start_hpcgate(ports, workers, row))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    try:
        wrk(url, conns, 1, headers_for(row))  # warm-up: connections, TLS, caches
        pids = [p for pr in procs for p in pr.pids()]
        cpu0 = cpu_seconds(pids)
        r = wrk(url, conns, seconds, headers_for(row), script)
        cpu = cpu_seconds(pids) - cpu0
        r["cpu_s_per_100k"] = round(cpu / r["requests"] * 100_000, 3) if procs else None
        r["peak_rss_mib"] = round(status_kib(pids, "VmHWM") / 1024, 1) if procs else None
        if r["non2xx"]:
            sys.exit(f"row {row} ({url}): {r['non2xx']} non-2xx answers; see {WORK}")
    finally:
        for p in procs:
            p.stop()
    return r


PACE_MS = 10  # per connection, between a response and the next request, in paced runs


def paced_script(delay_ms):
    path = os.path.join(WORK, f"pace-{delay_ms}.lua")
    with open(path, "w") as f:
        # Uniform in [0, 2 × delay]: the mean is the delay, and connections do not fire in
        # step (a fixed delay makes every connection's timer expire in the same millisecond,
        # and the burst's queueing then dominates both rows' latency).
        f.write(f"function delay()\n  return math.random(0, {2 * delay_ms})\nend\n")
    return path


def added_latency(ports, results, seconds, rounds, rows):
    """Latency hpcgate's row f adds over direct (row a) at half of f's maximum: plain HTTP, 1
    worker. wrk has no rate limit, so the load is set by connections that each wait PACE_MS
    on average between requests (wrk's latency excludes the wait), calibrated on row f; then
    a, f and, as the reference, nginx's rows b and c (when measured) run with the same
    connections and pacing, interleaved."""
    best = max(
        median([r["rps"] for r in results if (r["workers"], r["transport"], r["conns"], r["row"]) == (1, "plain", c, "f")])
        or 0
        for c in {r["conns"] for r in results}
    )
    if not best:
        return None
    target = best / 2
    script = paced_script(PACE_MS)
    conns = max(1, round(target * PACE_MS / 1000))
    for _ in range(4):
        r = measure("f", False, conns, 1, ports, 2, script)
        print(f"pacing: {conns} connections → {r['rps']:.0f} req/s (target {target:.0f})", flush=True)
        if abs(r["rps"] - target) <= 0.05 * target:
            break
        conns = max(1, round(conns * target / max(r["rps"], 1.0)))
    lat_rows = [r for r in "abcf" if r in rows]
    runs = {row: [] for row in lat_rows}
    for _ in range(rounds):
        for row in lat_rows:
            runs[row].append(measure(row, False, conns, 1, ports, seconds, script))
    out = {"f_max_rps": best, "target_rps": round(target), "connections": conns, "pace_ms": PACE_MS,
           "rows": lat_rows}
    for row in lat_rows:
        for k in ["rps", "p50_ms", "p99_ms"]:
            out[f"{row}_{k}"] = median([r[k] for r in runs[row]])
    for row in lat_rows[1:]:
        suffix = "" if row == "f" else f"_{row}"
        out[f"added_p50_us{suffix}"] = round((out[f"{row}_p50_ms"] - out["a_p50_ms"]) * 1000)
        out[f"added_p99_us{suffix}"] = round((out[f"{row}_p99_ms"] - out["a_p99_ms"]) * 1000)
    return out


def memory(ports):
    """RSS idle and with 1,000 open keep-alive connections: nginx proxy and hpcgate (row f)."""
    out = {}
    for name in ["b", "d", "f"]:
        if name == "b":
            proc = start_nginx_proxy(ports, 1, auth=False)
        else:
            proc = start_hpcgate(ports, 1, name)
        try:
            time.sleep(1)
            idle = status_kib(proc.pids(), "VmRSS")
            idle_anon = status_kib(proc.pids(), "RssAnon")
            socks = hold_connections_with(ports["px"], 1000, name)
            time.sleep(1)
            held = status_kib(proc.pids(), "VmRSS")
            held_anon = status_kib(proc.pids(), "RssAnon")
            for s in socks:
                s.close()
        finally:
            proc.stop()
        out[name] = {
            "idle_mib": round(idle / 1024, 1),
            "with_1000_conns_mib": round(held / 1024, 1),
            # RSS less the mapped executable and libraries (clean pages shared with the page cache)
            "idle_anon_mib": round(idle_anon / 1024, 1),
            "with_1000_conns_anon_mib": round(held_anon / 1024, 1),
        }
    return out


def hold_connections_with(port, n, row):
    extra = ""
    if row == "f":
        extra = f"Authorization: Bearer {JWT}\r\n"
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        data = b""
        while not data.endswith(BODY.encode()):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"row {row}: a held connection was closed: {data[:200]!r}")
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            sys.exit(f"row {row}: held connection got {data[:200]!r}")
    return socks


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    global WORK, CERTS, HPCGATE, AUTH_TOKEN, SERVE_FLAGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hpcgate", required=True)
    ap.add_argument("--seconds", type=int, default=4, help="length of each measured run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", default="16,256")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--transports", default="plain,tls")
    ap.add_argument("--rows", default="abcdef")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s runs (checks the script)")
    ap.add_argument("--out", default="benches/load/results")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1, 1
    HPCGATE = os.path.abspath(args.hpcgate)
    WORK = tempfile.mkdtemp(prefix="hpcgate-load-")
    os.makedirs(f"{WORK}/tmp")
    CERTS = f"{WORK}/certs"
    AUTH_TOKEN = "bench-" + os.urandom(8).hex()
    helptext = subprocess.run([HPCGATE, "serve", "--help"], capture_output=True, text=True).stdout
    SERVE_FLAGS = ["--allow-root"] if "--allow-root" in helptext and os.getuid() == 0 else []
    subprocess.run([HPCGATE, "gen-cert", "--dir", CERTS], check=True, capture_output=True)
    ports = {k: free_port() for k in ["up", "up_tls", "px", "px_tls", "auth"]}
    upstream = start_upstream(ports)
    results = []
    try:
        setup_credentials(ports)
        for rnd in range(args.rounds):
            for workers in [int(w) for w in args.workers.split(",")]:
                for transport in args.transports.split(","):
                    for conns in [int(c) for c in args.conns.split(",")]:
                        for row in args.rows:
                            r = measure(row, transport == "tls", conns, workers, ports, args.seconds)
                            r.update(round=rnd, workers=workers, transport=transport, conns=conns, row=row)
                            results.append(r)
                            print(
                                f"round {rnd} w{workers} {transport:5} c{conns:<4} {row} "
                                f"{r['rps']:>9.0f} req/s p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms",
                                flush=True,
                            )
        latency = (
            added_latency(ports, results, args.seconds, args.rounds, args.rows)
            if set("af") <= set(args.rows)
            else None
        )
        mem = memory(ports)
    finally:
        upstream.stop()
    report(args, results, mem, latency)
    shutil.rmtree(WORK, ignore_errors=True)


def report(args, results, mem, latency):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, stamp)
    machine = {
        "cpus": os.cpu_count(),
        "cpu": next(
            (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"
        ),
        "kernel": os.uname().release,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "hpcgate": subprocess.run([HPCGATE, "version"], capture_output=True, text=True).stdout.strip(),
    }
    with open(base + ".json", "w") as f:
        json.dump(
            {"machine": machine, "args": vars(args), "runs": results, "added_latency": latency, "memory": mem},
            f,
            indent=1,
        )
    lines = [
        f"# Load comparison, {stamp}",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
        f"{machine['nginx']}, {machine['hpcgate']}. wrk -t1, keep-alive, {args.seconds} s per run, "
        f"{args.rounds} round(s) interleaved; medians over rounds. CPU = proxy processes "
        "(row c: nginx and its auth endpoint) per 100k requests; RSS = peak of the proxy.",
        "",
    ]
    scenarios = sorted({(r["workers"], r["transport"], r["conns"]) for r in results})
    summary = []
    for w, t, c in scenarios:
        lines += [
            f"## {t}, {c} connections, {w} worker(s)",
            "",
            "| row | req/s | p50 ms | p99 ms | CPU s/100k | peak RSS MiB | × nginx proxy | × direct |",
            "|---|---|---|---|---|---|---|---|",
        ]
        med = {}
        for row in args.rows:
            rs = [r for r in results if (r["workers"], r["transport"], r["conns"], r["row"]) == (w, t, c, row)]
            med[row] = {k: median([r[k] for r in rs]) for k in ["rps", "p50_ms", "p99_ms", "cpu_s_per_100k", "peak_rss_mib"]}
        for row in args.rows:
            m = med[row]
            vs_b = m["rps"] / med["b"]["rps"] if "b" in med else None
            vs_a = m["rps"] / med["a"]["rps"] if "a" in med else None
            fmt = lambda x, d=2: "–" if x is None else f"{x:.{d}f}"
            lines.append(
                f"| {row} {ROW_NAMES[row]} | {m['rps']:.0f} | {fmt(m['p50_ms'], 3)} | {fmt(m['p99_ms'], 3)} | "
                f"{fmt(m['cpu_s_per_100k'], 3)} | {fmt(m['peak_rss_mib'], 1)} | {fmt(vs_b)} | {fmt(vs_a)} |"
            )
        if all(k in med for k in "abcdf"):
            summary.append(
                (f"{t} c{c} w{w}", med["f"]["rps"] / med["b"]["rps"], med["f"]["rps"] / med["c"]["rps"],
                 med["d"]["rps"] / med["b"]["rps"], med["f"]["rps"] / med["a"]["rps"])
            )
        lines.append("")
    if summary:
        lines += [
            "## Targets",
            "",
            "| scenario | f / b (≥ 1.2) | f / c (≥ 2) | d / b (≥ 1.3) | f / a (≥ 0.6) |",
            "|---|---|---|---|---|",
        ]
        for s in summary:
            lines.append(f"| {s[0]} | {s[1]:.2f} | {s[2]:.2f} | {s[3]:.2f} | {s[4]:.2f} |")
        lines.append("")
    if latency:
        lat = latency
        lines += [
            "## Added latency (plain HTTP, 1 worker, at half of f's maximum)",
            "",
            f"f's maximum {lat['f_max_rps']:.0f} req/s; {lat['connections']} connections waiting "
            f"{lat['pace_ms']} ms between requests; medians of {args.rounds} interleaved run(s).",
            "",
            "| row | req/s | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        for row in lat.get("rows", "af"):
            lines.append(
                f"| {row} {ROW_NAMES[row]} | {lat[row + '_rps']:.0f} | {lat[row + '_p50_ms']:.3f} "
                f"| {lat[row + '_p99_ms']:.3f} |"
            )
        lines += [
            "",
            f"Added by f: p50 {lat['added_p50_us']} µs (target ≤ 100 µs), "
            f"p99 {lat['added_p99_us']} µs (target ≤ 1,000 µs).",
        ]
        for row in [r for r in lat.get("rows", "af") if r in "bc"]:
            lines.append(
                f"Added by {row} (nginx, at the same load): p50 {lat['added_p50_us_' + row]} µs, "
                f"p99 {lat['added_p99_us_' + row]} µs."
            )
        lines.append("")
    lines += [
        "## Memory (1 worker, plain HTTP)",
        "",
        "| proxy | RSS idle MiB | RSS with 1,000 open keep-alive connections MiB | of which anonymous (idle → 1,000) MiB |",
        "|---|---|---|---|",
    ]
    for row, m in mem.items():
        lines.append(
            f"| {row} {ROW_NAMES[row]} | {m['idle_mib']} | {m['with_1000_conns_mib']} "
            f"| {m.get('idle_anon_mib', '?')} → {m.get('with_1000_conns_anon_mib', '?')} |"
        )
    lines.append("")
    text = "\n".join(lines)
    with open(base + ".md", "w") as f:
        f.write(text)
    chart(base, args, results, scenarios)
    print(text)
    print(f"written: {base}.md, {base}.json, {base}.png")


def chart(base, args, results, scenarios):
    data = base + ".dat"
    with open(data, "w") as f:
        f.write("scenario " + " ".join(args.rows) + "\n")
        for w, t, c in scenarios:
            vals = []
            for row in args.rows:
                rs = [r["rps"] for r in results if (r["workers"], r["transport"], r["conns"], r["row"]) == (w, t, c, row)]
                vals.append(f"{median(rs):.0f}")
            f.write(f'"{t} c{c} w{w}" ' + " ".join(vals) + "\n")
    plot = "\n".join(
        [
            f"set terminal pngcairo size 1280,640 font ',10'" if "pngcairo" in gnuplot_terms() else "set terminal png size 1280,640",
            f"set output '{base}.png'",
            "set style data histograms",
            "set style histogram clustered gap 1",
            "set style fill solid 0.8 border -1",
            "set key outside right top",
            "set ylabel 'requests per second (median)'",
            "set yrange [0:*]",
            "set grid ytics",
            "set title 'hpcgate vs nginx on loopback (wrk -t1, keep-alive)'",
            "plot " + ", ".join(
                f"'{data}' using {i + 2}:xtic(1) title '{row} {ROW_NAMES[row]}'" for i, row in enumerate(args.rows)
            ),
        ]
    )
    subprocess.run(["gnuplot"], input=plot, text=True, check=True)
    os.remove(data)


def gnuplot_terms():
    out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return out.stdout + out.stderr


if __name__ == "__main__":
    main()
