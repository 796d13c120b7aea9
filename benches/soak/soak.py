#!/usr/bin/env python3
"""hpcgate soak test: a long run at ~80 % of the maximum load, watching memory and descriptors.

Run through benches/soak/run (which installs nginx and wrk and builds hpcgate).

On loopback only: nginx (1 worker, a 62-byte JSON body) as the upstream and one hpcgate in
front of it with four routes, one per way in:
  /pub/...   public (no authentication)
  /key/...   API key (X-API-Key, and Authorization: Bearer hpcg_...)
  /jwt/...   gateway JWT (EdDSA) from POST /auth/token, Cedar policy, identity headers upstream
  /basic/... static users file, HTTP Basic (argon2id; successes cached)
One wrk client (-t1) rotates through GET and POST requests on all four with varied paths and
queries (a Lua script). wrk has no rate limit, so the load is bounded by Lua `delay()`
between requests per connection: first the maximum is measured with no delay, then the
number of connections at a fixed delay is calibrated to ~80 % of it, then one long run.

Every 10 s the gateway's VmRSS (/proc/PID/status) and open descriptors (/proc/PID/fd) are
sampled. Checks (exit 1 if one fails): no errors (non-2xx answers and socket errors), RSS
growth from the baseline (minute 2, or half-way in shorter runs) to the end < 5 %, and the
descriptor count flat (max - min <= 5 % of the connections + 10).
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load"))
import bench  # noqa: E402  (servers, credentials and wrk parsing shared with the load bench)

SAMPLE_EVERY = 10.0
DELAY_MS = 10  # per connection between requests in the bounded runs
ROUTES = {"pub": "public", "key": "keys", "jwt": "tokens", "basic": "local"}


def config(ports):
    routes = "".join(
        f'\n[[routes]]\nname = "{name}"\npath_prefix = "/{name}"\npool = "up"\n'
        f"authenticators = [\"{auth}\"]\n"
        for name, auth in ROUTES.items()
    )
    # The load bench's config (listeners, authenticators, tokens, audit, pool), our routes.
    base = bench.hpcgate_config(ports, WORKERS, "d").split("[[routes]]")[0]
    return base + routes


def start_gateway(ports):
    path = os.path.join(bench.WORK, "soak.toml")
    with open(path, "w") as f:
        f.write(config(ports))
    return bench.Proc([bench.HPCGATE, "serve", "--config", path] + bench.SERVE_FLAGS, "hpcgate", ports["px"])


def requests():
    """(method, path, headers[, body]) of every request the soak sends, in turn."""
    basic = "Basic " + __import__("base64").b64encode(b"alice:bench-password").decode()
    return [
        ("GET", "/pub/", {}),
        ("GET", "/pub/api/v1/query?query=up", {}),
        ("POST", "/pub/api/v1/query", {"Content-Type": "application/x-www-form-urlencoded"}, "query=up"),
        ("GET", "/key/api/v1/labels", {"X-API-Key": bench.API_KEY}),
        ("GET", "/key/jobs?user=alice&limit=10", {"Authorization": f"Bearer {bench.API_KEY}"}),
        ("GET", "/jwt/api/v1/query_range?query=rate(x%5B5m%5D)&start=1&end=2&step=1",
         {"Authorization": f"Bearer {bench.JWT}"}),
        ("POST", "/jwt/submit", {"Authorization": f"Bearer {bench.JWT}", "Content-Type": "application/json"},
         '{"job":{"name":"soak"}}'),
        ("GET", "/basic/whoami", {"Authorization": basic}),
        ("GET", "/basic/a/b/c?x=1&y=2", {"Authorization": basic, "Accept": "application/json"}),
    ]


def check_requests(port):
    """Each request once, before any load: all must answer 2xx, or the soak is meaningless."""
    for r in requests():
        method, path, headers = r[0], r[1], r[2]
        body = r[3].encode() if len(r) > 3 else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            sys.exit(f"{method} {path} answered {e.code}: {e.read()[:300]!r}; see {bench.WORK}")
        if not 200 <= status < 300:
            sys.exit(f"{method} {path} answered {status}; see {bench.WORK}")


def lua_script(delay_ms):
    """wrk script: rotate through every route and auth method; count statuses; a delay."""
    # Built in init(): wrk sets the Host header only after the script is loaded, and a
    # request formatted before has none (the gateway refuses HTTP/1.1 without Host).
    lines = ["local reqs = {}", "init = function(args)"]
    for r in requests():
        method, path, headers = r[0], r[1], r[2]
        body = r[3] if len(r) > 3 else None
        hdr = ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items())
        b = "nil" if body is None else json.dumps(body)
        lines.append(f'  reqs[#reqs + 1] = wrk.format("{method}", "{path}", {{{hdr}}}, {b})')
    lines.append("end")
    lines.append(
        """
local i = 0
bad = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
response = function(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
"""
    )
    if delay_ms:
        lines.append(f"delay = function() return {delay_ms} end")
    lines.append(
        """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("SOAK requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d status=%d\\n",
    summary.requests, b, e.connect, e.read, e.write, e.timeout, e.status))
end
"""
    )
    path = os.path.join(bench.WORK, f"soak-{delay_ms}.lua")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def wrk(url, conns, seconds, script):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", script, url],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"wrk failed: {out.stderr}")
    m = re.search(r"SOAK requests=(\d+) non2xx=(\d+) connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+) status=(\d+)",
                  out.stdout)
    if not m:
        sys.exit(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    n = [int(x) for x in m.groups()]
    return {
        "requests": n[0],
        "non2xx": n[1],
        "socket_errors": n[2] + n[3] + n[4] + n[5],
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1)),
    }


def rss_kib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    global WORKERS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hpcgate", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="1 minute (checks the script)")
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the measured maximum")
    ap.add_argument("--max-conns", type=int, default=64, help="connections when measuring the maximum")
    ap.add_argument("--workers", type=int, default=1, help="hpcgate [server] threads")
    ap.add_argument("--out", default="benches/soak-results")
    args = ap.parse_args()
    if args.quick:
        args.minutes = 1.0
    WORKERS = args.workers
    duration = int(args.minutes * 60)
    bench.HPCGATE = os.path.abspath(args.hpcgate)
    bench.WORK = tempfile.mkdtemp(prefix="hpcgate-soak-")
    os.makedirs(f"{bench.WORK}/tmp")
    bench.CERTS = f"{bench.WORK}/certs"
    helptext = subprocess.run([bench.HPCGATE, "serve", "--help"], capture_output=True, text=True).stdout
    bench.SERVE_FLAGS = ["--allow-root"] if "--allow-root" in helptext and os.getuid() == 0 else []
    subprocess.run([bench.HPCGATE, "gen-cert", "--dir", bench.CERTS], check=True, capture_output=True)
    ports = {k: bench.free_port() for k in ["up", "up_tls", "px", "px_tls", "auth"]}
    upstream = bench.start_upstream(ports)
    gw = None
    try:
        bench.setup_credentials(ports)  # API key and gateway JWT for alice (users.toml too)
        gw = start_gateway(ports)
        pid = gw.p.pid
        url = f"http://127.0.0.1:{ports['px']}/"
        check_requests(ports["px"])
        # 1. The maximum: no delay, a few seconds after a warm-up.
        free = lua_script(0)
        wrk(url, args.max_conns, 2, free)
        peak = wrk(url, args.max_conns, 5, free)
        target = args.load * peak["rps"]
        print(f"maximum {peak['rps']:.0f} req/s ({args.max_conns} connections); target {target:.0f} req/s", flush=True)
        # 2. Connections at DELAY_MS between requests for the target rate (closed loop, so
        #    calibrated by measurement: latency grows with load).
        paced = lua_script(DELAY_MS)
        conns = max(1, round(target * DELAY_MS / 1000))
        for _ in range(4):
            r = wrk(url, conns, 3, paced)
            print(f"calibrating: {conns} connections → {r['rps']:.0f} req/s", flush=True)
            if abs(r["rps"] - target) <= 0.05 * target:
                break
            conns = max(1, round(conns * target / max(r["rps"], 1.0)))
        # 3. The soak: one wrk run, sampled every 10 s.
        samples = []
        t0 = time.time()
        result = {}
        runner = threading.Thread(target=lambda: result.update(wrk(url, conns, duration, paced)))
        runner.start()
        # The first sample after one interval: by then every connection is open.
        while True:
            runner.join(timeout=max(0.0, SAMPLE_EVERY * (len(samples) + 1) - (time.time() - t0)))
            if not runner.is_alive():
                break
            if gw.p.poll() is not None:
                sys.exit(f"hpcgate exited with {gw.p.returncode} during the soak; see {bench.WORK}")
            t = time.time() - t0
            samples.append({"t": round(t, 1), "rss_kib": rss_kib(pid), "hwm_kib": rss_kib(pid, "VmHWM"), "fds": fds(pid)})
            print(f"  t={t:6.0f}s RSS {samples[-1]['rss_kib'] / 1024:7.1f} MiB  fds {samples[-1]['fds']}", flush=True)
        if not samples:
            sys.exit("the soak ended before the first sample")
    finally:
        if gw:
            gw.stop()
        upstream.stop()
    report(args, peak, target, conns, result, samples, duration)
    shutil.rmtree(bench.WORK, ignore_errors=True)


def report(args, peak, target, conns, result, samples, duration):
    base_t = min(120.0, duration / 2)
    during = samples  # all taken while wrk was running
    baseline = next((s for s in during if s["t"] >= base_t), during[0])
    end = during[-1]
    growth = (end["rss_kib"] - baseline["rss_kib"]) / baseline["rss_kib"] * 100
    fd_min, fd_max = min(s["fds"] for s in during), max(s["fds"] for s in during)
    # Descriptors: the upstream pool grows and shrinks with the requests in flight (idle
    # upstream connections time out), so the count moves by a few percent of the connections;
    # a leak shows as growth. Compare the last third of the run (after the baseline) with
    # the first third: medians, and the last third's maximum against everything before it.
    after = [s for s in during if s["t"] >= baseline["t"]]
    third = max(1, len(after) // 3)
    first, last = after[:third], after[-third:]
    fd_first = statistics.median(s["fds"] for s in first)
    fd_last = statistics.median(s["fds"] for s in last)
    fd_before_max = max(s["fds"] for s in during if s["t"] < last[0]["t"]) if len(during) > len(last) else fd_max
    fd_slack = 0.05 * conns + 10
    errors = result["non2xx"] + result["socket_errors"]
    checks = {
        "no errors": errors == 0,
        "RSS growth < 5 %": growth < 5.0,
        "descriptors flat (no growth)": fd_last - fd_first <= fd_slack
        and max(s["fds"] for s in last) <= fd_before_max + fd_slack,
    }
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, stamp)
    version = subprocess.run([bench.HPCGATE, "version"], capture_output=True, text=True).stdout.strip()
    summary = {
        "hpcgate": version,
        "cpus": os.cpu_count(),
        "minutes": args.minutes,
        "workers": args.workers,
        "max_rps": peak["rps"],
        "target_rps": round(target),
        "connections": conns,
        "delay_ms": DELAY_MS,
        "achieved_rps": result["rps"],
        "requests": result["requests"],
        "non2xx": result["non2xx"],
        "socket_errors": result["socket_errors"],
        "rss_baseline_t": baseline["t"],
        "rss_baseline_mib": round(baseline["rss_kib"] / 1024, 1),
        "rss_end_mib": round(end["rss_kib"] / 1024, 1),
        "rss_growth_pct": round(growth, 2),
        "rss_peak_mib": round(end["hwm_kib"] / 1024, 1),
        "fds_min": fd_min,
        "fds_max": fd_max,
        "fds_median_first_third": fd_first,
        "fds_median_last_third": fd_last,
        "checks": checks,
        "samples": samples,
    }
    with open(path + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    lines = [
        f"# Soak, {stamp}",
        "",
        f"{version}, {os.cpu_count()} CPUs, {args.workers} worker(s), {args.minutes:g} min at "
        f"{args.load:.0%} of the maximum ({peak['rps']:.0f} req/s): {conns} connections, "
        f"{DELAY_MS} ms between requests each; public, API key, gateway JWT and Basic routes mixed.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {result['requests']} ({result['rps']:.0f} req/s, target {target:.0f}) |",
        f"| errors (non-2xx + socket) | {errors} ({result['non2xx']} + {result['socket_errors']}) |",
        f"| RSS at {baseline['t']:.0f} s | {baseline['rss_kib'] / 1024:.1f} MiB |",
        f"| RSS at the end ({end['t']:.0f} s) | {end['rss_kib'] / 1024:.1f} MiB |",
        f"| RSS growth | {growth:+.2f} % |",
        f"| RSS peak (VmHWM) | {end['hwm_kib'] / 1024:.1f} MiB |",
        f"| open descriptors min / max | {fd_min} / {fd_max} |",
        f"| open descriptors, median of the first / last third after {baseline['t']:.0f} s | "
        f"{fd_first:g} / {fd_last:g} |",
        "",
        "| check | result |",
        "|---|---|",
    ] + [f"| {k} | {'pass' if ok else 'FAIL'} |" for k, ok in checks.items()] + [""]
    text = "\n".join(lines)
    with open(path + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"written: {path}.md, {path}.json")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
