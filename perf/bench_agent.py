#!/usr/bin/env python3
"""Benchmark of one ferry-agent over HTTP on loopback, against the figures of "Serverless
Computing: One Step Forward, Two Steps Back" (Hellerstein et al., CIDR 2019).

Scenarios (closed loop, keep-alive, wrk with --latency):
  echo-1kb        echo function, one 1 KiB BYTES element per request: the no-op invoke.
  wordfilter-10   "dirty word" filter, ten text messages per request.
each with 1 connection (unloaded latency) and N connections (throughput), 1 wrk thread.

The agent runs on CPU 0 (`taskset -c 0`) and wrk on CPU 1 (`taskset -c 1`) when taskset
exists, so that load generator and server do not compete for a core. The agent's RSS and CPU
time are sampled once a second from /proc during every run.

Writes <out>/agent.csv (and agent_soak.csv with --soak), plus PNG plots when matplotlib is
installed. Only the Python standard library is required.

  python perf/bench_agent.py [--build-dir build] [--duration 10] [--soak 300]
"""

import argparse
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
WRK_DIR = REPO_ROOT / "perf" / "wrk"
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from agentproc import AgentProcess  # noqa: E402  (one harness for tests and benchmarks)

# The paper's figures (AWS, 2018).
SEED_NOOP_LAMBDA_US = 303_000.0       # no-op invoke on 1 KB, Lambda
SEED_NOOP_ZEROMQ_US = 290.0           # same, ZeroMQ round trip between two EC2 hosts
SEED_BATCH10_LAMBDA_SQS_US = 447_000.0  # 10-message batch, Lambda + SQS
SEED_BATCH10_ZEROMQ_US = 2_800.0      # same, EC2 + ZeroMQ
SEED_NODE_RPS = 3_500.0               # requests/s of one m5.large on that job

BLACKLIST = ["darn", "heck", "drat", "blasted", "dang", "shoot", "crud", "frick", "bloody",
             "bollocks", "rubbish", "bugger", "blimey", "crikey", "dagnabbit", "doggone",
             "gosh", "jeez", "nuts", "phooey"]


def manifests_yaml(max_batch_size, queue_delay_us):
    batching = (f"{{maxBatchSize: {max_batch_size}, maxQueueDelayMicros: {queue_delay_us}, "
                f"maxQueueSize: 4096, policy: aimd}}")
    return {
        "echo.yaml": f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: echo}}
spec:
  runtime: echo
  batching: {batching}
""",
        "wordfilter.yaml": f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: wordfilter}}
spec:
  runtime: wordfilter
  config:
    blacklist: {json.dumps(BLACKLIST)}
  batching: {batching}
""",
    }


# --- the agent ------------------------------------------------------------------------------


def start_agent(binary, manifests, log_path, http_threads, cpus):
    """Starts ferry-agent through the end-to-end tests' harness and waits until it is ready."""
    extra = ["--http-threads", str(http_threads)] if http_threads else []
    prefix = ["taskset", "-c", cpus] if cpus else []
    agent = AgentProcess(manifests, log_path, max_body_bytes=64 << 20, extra_args=extra,
                         binary=binary, prefix=prefix)
    agent.start()
    try:
        agent.wait_ready()
    except RuntimeError as e:
        agent.terminate()
        sys.exit(f"bench: {e}")
    return agent


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Sampler:
    """Samples the agent's RSS once a second on a background thread."""

    def __init__(self, pid, period_s=1.0):
        self.pid, self.period_s = pid, period_s
        self.samples = []  # (seconds since start, rss KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        while True:
            try:
                self.samples.append((time.monotonic() - t0, rss_kib(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.period_s):
                self.samples.append((time.monotonic() - t0, rss_kib(self.pid)))
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- wrk --------------------------------------------------------------------------------------

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(output):
    result = {"non2xx": 0, "socket_errors": 0}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M):
        result[f"p{pct}_us"] = to_us(value)
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if m:
        result["requests_per_s"] = float(m.group(1))
    m = re.search(r"^\s+(\d+) requests in", output, re.M)
    if m:
        result["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if m:
        result["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        result["socket_errors"] = sum(int(g) for g in m.groups())
    missing = [k for k in ("p50_us", "p99_us", "requests_per_s") if k not in result]
    if missing:
        raise ValueError(f"could not parse {missing} from wrk output:\n{output}")
    return result


def run_wrk(url, script, connections, duration_s, cpus, env_extra=None):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s",
           "-s", str(script), url]
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=duration_s + 60)
    if out.returncode != 0:
        sys.exit(f"bench: wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return parse_wrk(out.stdout), out.stdout


# --- checks before measuring --------------------------------------------------------------------


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def check_functions(base):
    """One request per function, checked, so that a benchmark never measures errors."""
    doc = post_json(f"{base}/v2/models/echo/infer", {"inputs": [
        {"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["x" * 1024]}]})
    assert doc["outputs"][0]["data"] == ["x" * 1024], doc
    doc = post_json(f"{base}/v2/models/wordfilter/infer", {"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES",
         "data": ["that darn printer", "all fine"]}]})
    outs = {o["name"]: o["data"] for o in doc["outputs"]}
    assert outs["filtered"] == ["that **** printer", "all fine"], outs
    assert outs["count"] == [1, 0], outs


# --- reporting ------------------------------------------------------------------------------


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.0f} µs"


def comparisons(rows):
    by = {(r["scenario"], r["connections"]): r for r in rows}
    out = []

    def add(label, key, metric, seed, seed_text, higher_is_better=False):
        r = by.get(key)
        if r is None:
            return
        value = r[metric]
        ratio = value / seed if higher_is_better else seed / value
        shown = f"{value:,.0f} req/s" if higher_is_better else fmt_us(value)
        out.append({"comparison": label, "seed": seed_text, "ferry": shown, "ratio": ratio,
                    "scenario": r["scenario"], "connections": r["connections"],
                    "metric": metric, "seed_value": seed, "ferry_value": value})

    echo1 = ("echo-1kb", 1)
    wf1 = ("wordfilter-10", 1)
    wf_loaded = [k for k in by if k[0] == "wordfilter-10" and k[1] > 1]
    add("no-op invoke 1 KB, p50 vs Lambda", echo1, "p50_us", SEED_NOOP_LAMBDA_US, "303 ms")
    add("no-op invoke 1 KB, p50 vs EC2+ZeroMQ", echo1, "p50_us", SEED_NOOP_ZEROMQ_US, "290 µs")
    add("10-message batch, p50 vs Lambda+SQS", wf1, "p50_us", SEED_BATCH10_LAMBDA_SQS_US,
        "447 ms")
    add("10-message batch, p50 vs EC2+ZeroMQ", wf1, "p50_us", SEED_BATCH10_ZEROMQ_US, "2.8 ms")
    for key in wf_loaded:
        add(f"10-message batches/s, {key[1]} conns, vs m5.large", key, "requests_per_s",
            SEED_NODE_RPS, "3,500 req/s", higher_is_better=True)
    return out


def print_tables(rows, comps):
    print()
    head = (f"{'scenario':<15} {'conns':>5} {'req/s':>10} {'docs/s':>10} {'p50':>10} "
            f"{'p90':>10} {'p99':>10} {'errors':>7} {'cpu':>6} {'rss KiB start/end/max':>24}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rss = f"{r['rss_start_kib']}/{r['rss_end_kib']}/{r['rss_max_kib']}"
        print(f"{r['scenario']:<15} {r['connections']:>5} {r['requests_per_s']:>10,.0f} "
              f"{r['documents_per_s']:>10,.0f} {fmt_us(r['p50_us']):>10} "
              f"{fmt_us(r.get('p90_us')):>10} {fmt_us(r['p99_us']):>10} "
              f"{r['non2xx'] + r['socket_errors']:>7} {r['agent_cpu_util']:>6.2f} {rss:>24}")
    print()
    head = f"{'comparison with the paper':<48} {'seed':>12} {'ferry':>14} {'ratio':>10}"
    print(head)
    print("-" * len(head))
    for c in comps:
        better, worse = (("more", "fewer") if c["metric"] == "requests_per_s" else
                         ("faster", "slower"))
        ratio, word = (c["ratio"], better) if c["ratio"] >= 1 else (1 / c["ratio"], worse)
        print(f"{c['comparison']:<48} {c['seed']:>12} {c['ferry']:>14} "
              f"{ratio:>8,.1f}x {word}")
    print()


def write_csv(path, rows, fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def plot(out_dir, rows, soak):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed; skipping the plots (CSV files hold the data)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['scenario']}\n{r['connections']} conn" for r in rows]
    xs = range(len(rows))
    ax1.bar([x - 0.2 for x in xs], [r["p50_us"] for r in rows], 0.4, label="p50")
    ax1.bar([x + 0.2 for x in xs], [r["p99_us"] for r in rows], 0.4, label="p99")
    ax1.axhline(SEED_NOOP_ZEROMQ_US, color="gray", ls="--", lw=1)
    ax1.text(0, SEED_NOOP_ZEROMQ_US * 1.1, "EC2+ZeroMQ no-op 290 µs", fontsize=8)
    ax1.axhline(SEED_BATCH10_ZEROMQ_US, color="gray", ls=":", lw=1)
    ax1.text(0, SEED_BATCH10_ZEROMQ_US * 1.1, "EC2+ZeroMQ 10-msg batch 2.8 ms", fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("latency (µs, log)")
    ax1.set_xticks(list(xs), labels, fontsize=8)
    ax1.legend()
    ax2.bar(list(xs), [r["requests_per_s"] for r in rows])
    ax2.axhline(SEED_NODE_RPS, color="gray", ls="--", lw=1)
    ax2.text(0, SEED_NODE_RPS * 1.05, "m5.large 3,500 req/s", fontsize=8)
    ax2.set_ylabel("requests/s")
    ax2.set_xticks(list(xs), labels, fontsize=8)
    fig.suptitle("ferry-agent on loopback (agent on 1 core, wrk on another)")
    fig.tight_layout()
    fig.savefig(out_dir / "agent.png", dpi=120)
    print(f"bench: wrote {out_dir / 'agent.png'}")
    if soak:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([t for t, _ in soak], [kib / 1024 for _, kib in soak])
        ax.set_xlabel("seconds under load")
        ax.set_ylabel("agent RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("ferry-agent RSS during the wordfilter soak")
        fig.tight_layout()
        fig.savefig(out_dir / "agent_soak.png", dpi=120)
        print(f"bench: wrote {out_dir / 'agent_soak.png'}")


# --- main -------------------------------------------------------------------------------------

CSV_FIELDS = ["scenario", "connections", "duration_s", "documents_per_request", "requests",
              "requests_per_s", "documents_per_s", "p50_us", "p75_us", "p90_us", "p99_us",
              "non2xx", "socket_errors", "agent_cpu_seconds", "agent_cpu_util",
              "rss_start_kib", "rss_end_kib", "rss_max_kib"]


def measure(agent, scenario, script, docs, connections, duration, wrk_cpus):
    pid = agent.proc.pid
    cpu0 = cpu_seconds(pid)
    with Sampler(pid) as sampler:
        stats, _ = run_wrk(agent.http_url, script, connections, duration, wrk_cpus)
    cpu = cpu_seconds(pid) - cpu0
    rss = [kib for _, kib in sampler.samples] or [0]
    row = {"scenario": scenario, "connections": connections, "duration_s": duration,
           "documents_per_request": docs, **stats,
           "documents_per_s": round(stats["requests_per_s"] * docs, 1),
           "agent_cpu_seconds": round(cpu, 2), "agent_cpu_util": round(cpu / duration, 3),
           "rss_start_kib": rss[0], "rss_end_kib": rss[-1], "rss_max_kib": max(rss)}
    print(f"bench: {scenario:<14} c={connections:<3} {stats['requests_per_s']:>10,.0f} req/s  "
          f"p50 {fmt_us(stats['p50_us'])}  p99 {fmt_us(stats['p99_us'])}  "
          f"errors {stats['non2xx'] + stats['socket_errors']}")
    if stats["non2xx"] or stats["socket_errors"]:
        print(f"bench: WARNING: {scenario} c={connections} had {stats['non2xx']} non-2xx "
              f"responses and {stats['socket_errors']} socket errors: its numbers are not valid")
    return row


def soak(agent, seconds, connections, wrk_cpus, out_dir):
    print(f"bench: soak: wordfilter, {connections} connections, {seconds} s")
    with Sampler(agent.proc.pid) as sampler:
        stats, _ = run_wrk(agent.http_url, WRK_DIR / "wordfilter.lua", connections, seconds, wrk_cpus)
    samples = sampler.samples
    write_csv(out_dir / "agent_soak.csv",
              [{"t_s": round(t, 1), "rss_kib": kib} for t, kib in samples], ["t_s", "rss_kib"])
    rss = [kib for _, kib in samples]
    # Growth after warm-up: the first tenth (at least 10 s) is allowed to grow (allocator
    # pools, connection buffers); after that RSS should be flat.
    warm = next((kib for t, kib in samples if t >= max(10.0, seconds / 10)), rss[0])
    growth = rss[-1] - warm
    print(f"bench: soak: {stats['requests_per_s']:,.0f} req/s, p99 {fmt_us(stats['p99_us'])}, "
          f"errors {stats['non2xx'] + stats['socket_errors']}")
    print(f"bench: soak RSS KiB: start {rss[0]}, after warm-up {warm}, end {rss[-1]}, "
          f"max {max(rss)}; growth after warm-up {growth:+d} KiB "
          f"({100.0 * growth / max(warm, 1):+.1f}%)")
    print(f"bench: wrote {out_dir / 'agent_soak.csv'}")
    return samples


def run_peers(duration, agent_cpus, wrk_cpus):
    """Runs the ZeroMQ peer (perf/peers/zmq_peer.py) for both jobs, one connection each."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        print("bench: pyzmq not installed; skipping the ZeroMQ peer")
        return []
    peers = []
    for job in ("echo", "wordfilter"):
        cmd = [sys.executable, str(REPO_ROOT / "perf" / "peers" / "zmq_peer.py"), "--job", job,
               "--duration", str(duration)]
        if agent_cpus:
            cmd += ["--server-cpus", agent_cpus, "--client-cpus", wrk_cpus]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            print(f"bench: ZeroMQ peer ({job}) failed: {out.stderr[-500:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["peer"] = f"zeromq-python-{job}"
        peers.append(r)
        print(f"bench: peer {r['peer']:<24} {r['requests_per_s']:>10,.0f} req/s  "
              f"p50 {fmt_us(r['p50_us'])}  p99 {fmt_us(r['p99_us'])}")
    return peers


def print_peers(rows, peers):
    if not peers:
        return
    by = {(r["scenario"], r["connections"]): r for r in rows}
    head = (f"{'same machine, 1 connection':<34} {'peer p50':>10} {'ferry p50':>10} "
            f"{'peer req/s':>11} {'ferry req/s':>12} {'p50 ratio':>10}")
    print(head)
    print("-" * len(head))
    for p in peers:
        scenario = "echo-1kb" if p["job"] == "echo" else "wordfilter-10"
        f = by.get((scenario, 1))
        if f is None:
            continue
        print(f"{p['peer'] + ' vs ' + scenario:<34} {fmt_us(p['p50_us']):>10} "
              f"{fmt_us(f['p50_us']):>10} {p['requests_per_s']:>11,.0f} "
              f"{f['requests_per_s']:>12,.0f} {p['p50_us'] / f['p50_us']:>9.1f}x")
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("FERRY_BUILD_DIR", "build"),
                   help="build folder holding node-agent/ferry-agent (default: build)")
    p.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    p.add_argument("--connections", type=int, default=32,
                   help="connections of the loaded runs (default 32)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded warm-up")
    p.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                   help="afterwards, run the loaded wordfilter run this long, sampling RSS")
    p.add_argument("--only", choices=["echo", "wordfilter"], help="run one function only")
    p.add_argument("--http-threads", type=int, default=0,
                   help="--http-threads for the agent (default: the agent's own default)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--queue-delay-us", type=int, default=0,
                   help="maxQueueDelayMicros of the functions (default 0: a batch is whatever "
                        "waits when the executor frees up)")
    p.add_argument("--agent-cpus", default="0", help="taskset CPU list for the agent")
    p.add_argument("--wrk-cpus", default="1", help="taskset CPU list for wrk")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--no-peers", action="store_true",
                   help="skip the ZeroMQ peer (perf/peers/zmq_peer.py)")
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results"),
                   help="folder for CSV and PNG files (default perf/results)")
    args = p.parse_args()

    build = pathlib.Path(args.build_dir)
    if not build.is_absolute():
        build = REPO_ROOT / build
    binary = build / "node-agent" / "ferry-agent"
    if not binary.exists():
        sys.exit(f"bench: {binary} not found; build it first (make build)")
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk not found (Debian package wrk; scripts/install-deps.sh installs it)")
    pin = not args.no_pin and shutil.which("taskset") is not None
    if not pin and not args.no_pin:
        print("bench: taskset not found; agent and wrk share CPUs (numbers are noisier)")
    agent_cpus = args.agent_cpus if pin else None
    wrk_cpus = args.wrk_cpus if pin else None
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name, text in manifests_yaml(args.max_batch_size, args.queue_delay_us).items():
            (manifests / name).write_text(text)
        agent = start_agent(binary, manifests, tmp / "agent.log", args.http_threads, agent_cpus)
        print(f"bench: ferry-agent pid {agent.proc.pid} at {agent.http_url}"
              + (f", agent on CPU {agent_cpus}, wrk on CPU {wrk_cpus}" if pin else ""))
        try:
            check_functions(agent.http_url)
            plan = []
            if args.only in (None, "echo"):
                plan.append(("echo-1kb", WRK_DIR / "echo.lua", 1))
            if args.only in (None, "wordfilter"):
                plan.append(("wordfilter-10", WRK_DIR / "wordfilter.lua", 10))
            for _, script, _ in plan:
                if args.warmup > 0:
                    run_wrk(agent.http_url, script, args.connections, args.warmup, wrk_cpus)
            rows = []
            for scenario, script, docs in plan:
                for conns in (1, args.connections):
                    rows.append(measure(agent, scenario, script, docs, conns, args.duration,
                                        wrk_cpus))
            soak_samples = None
            if args.soak > 0:
                soak_samples = soak(agent, args.soak, args.connections, wrk_cpus, out_dir)
        finally:
            code = agent.terminate()
        if code != 0:
            print(f"bench: warning: ferry-agent exited with {code} after SIGTERM:\n"
                  f"{(tmp / 'agent.log').read_text(errors='replace')[-2000:]}")

    peers = [] if args.no_peers else run_peers(args.duration, agent_cpus, wrk_cpus)
    comps = comparisons(rows)
    print_tables(rows, comps)
    print_peers(rows, peers)
    if peers:
        write_csv(out_dir / "peers.csv", peers,
                  ["peer", "job", "requests", "requests_per_s", "p50_us", "p90_us", "p99_us"])
    write_csv(out_dir / "agent.csv", rows, CSV_FIELDS)
    for c in comps:
        c["ratio"] = round(c["ratio"], 2)
    write_csv(out_dir / "agent_vs_paper.csv", comps,
              ["comparison", "scenario", "connections", "metric", "seed_value", "ferry_value",
               "ratio"])
    print(f"bench: wrote {out_dir / 'agent.csv'} and {out_dir / 'agent_vs_paper.csv'}")
    plot(out_dir, rows, soak_samples)


if __name__ == "__main__":
    main()
