#!/usr/bin/env python3
"""The seed paper's two figures re-run in one go ("Serverless Computing: One Step Forward, Two
Steps Back", Hellerstein et al., CIDR 2019): the no-op invoke on 1 KB and the 10-message
dirty-word filter, against ferry-agent over HTTP JSON, HTTP binary tensors and gRPC, driven by
ferry-loadgen and by wrk, beside a bare Boost.Beast echo server (perf/bare_echo: no parsing, no
batching) as this machine's HTTP ceiling.

Every scenario runs closed loop with 1 connection (unloaded latency) and with N connections
(throughput), --runs rounds interleaved; the tables show medians over the rounds. The servers run
on one CPU (taskset -c 0) and the load generators on another (taskset -c 1).

  build/venv/bin/python perf/bench_seed.py --build-dir build [--runs 3] [--duration 3]
  build/venv/bin/python perf/bench_seed.py --build-dir build --profile 10   # + perf record

Writes <out>/seed_runs.csv (every run), <out>/seed.csv (medians), <out>/seed.png (with
matplotlib) and, with --profile, <out>/seed_profile_{agent,bare}.txt (perf report of each
server under the same load).
"""

import argparse
import csv
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "perf"))
import bench_agent as ba  # noqa: E402  (one copy of the manifests, wrk parsing, paper figures)

# (scenario, loadgen workload, wrk script)
WORKLOADS = [("noop-1kb", "echo", "echo.lua"), ("wordfilter-10", "wordfilter", "wordfilter.lua")]


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus else []


class BareEcho:
    """perf/bare_echo's server on an ephemeral loopback port."""

    def __init__(self, binary, cpus):
        self.proc = subprocess.Popen(taskset(cpus) + [str(binary), "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"bare-echo: listening (\d+)", line)
        if not m:
            self.proc.kill()
            sys.exit(f"bench_seed: bare-echo did not start: {line!r}")
        self.port = int(m.group(1))

    def terminate(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_loadgen(loadgen, cpus, port, protocol, workload, connections, duration, warmup, label,
                check=True):
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
        csv_path = f.name
    os.unlink(csv_path)
    cmd = taskset(cpus) + [str(loadgen), "--port", str(port), "--protocol", protocol,
                           "--workload", workload, "--mode", "closed", "--connections",
                           str(connections), "--duration", str(duration), "--warmup",
                           str(warmup), "--label", label, "--csv", csv_path]
    if not check:
        cmd.append("--no-check")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    if out.returncode != 0:
        sys.exit(f"bench_seed: ferry-loadgen failed ({out.returncode}): {' '.join(cmd)}\n"
                 f"{out.stdout}\n{out.stderr}")
    with open(csv_path) as f:
        row = list(csv.DictReader(f))[-1]
    os.unlink(csv_path)
    return {"requests_per_s": float(row["throughput_rps"]), "p50_us": float(row["p50_us"]),
            "p90_us": float(row["p90_us"]), "p99_us": float(row["p99_us"]),
            "p999_us": float(row["p999_us"]), "errors": int(row["errors"]),
            "error_kinds": row["error_kinds"]}


def run_wrk(cpus, port, script, connections, duration, warmup):
    url = f"http://127.0.0.1:{port}"
    if warmup > 0:
        ba.run_wrk(url, ba.WRK_DIR / script, connections, max(1, round(warmup)), cpus)
    # wrk takes whole seconds.
    stats, _ = ba.run_wrk(url, ba.WRK_DIR / script, connections, max(1, round(duration)), cpus)
    return {"requests_per_s": stats["requests_per_s"], "p50_us": stats["p50_us"],
            "p90_us": stats.get("p90_us"), "p99_us": stats["p99_us"], "p999_us": None,
            "errors": stats["non2xx"] + stats["socket_errors"], "error_kinds": ""}


def open_sweep(args, loadgen, agent, bare, client_cpus, csv_path):
    """Open-loop Poisson arrivals, latency from each request's scheduled send time."""
    if csv_path.exists():
        csv_path.unlink()
    for server, port, check in (("ferry", agent.http_port, True), ("bare", bare.port, False)):
        cmd = taskset(client_cpus) + [
            str(loadgen), "--port", str(port), "--protocol", "json", "--workload", "echo",
            "--rates", args.open_rates, "--connections", str(args.connections),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--label", f"{server}/noop-1kb/open", "--csv", str(csv_path)]
        if not check:
            cmd.append("--no-check")
        out = subprocess.run(cmd, capture_output=True, text=True)
        print(f"bench_seed: open loop, {server}:\n{out.stdout}{out.stderr}", flush=True)
    print(f"bench_seed: wrote {csv_path}")


def plan(args):
    """Every (server, scenario, protocol, tool) to measure, in the order of one round."""
    out = []
    for scenario, workload, script in WORKLOADS:
        for protocol in ("json", "binary", "grpc"):
            out.append(("ferry", scenario, workload, protocol, "loadgen", script))
        if not args.skip_wrk:
            out.append(("ferry", scenario, workload, "json", "wrk", script))
        out.append(("bare", scenario, workload, "http", "loadgen", script))
        if not args.skip_wrk:
            out.append(("bare", scenario, workload, "http", "wrk", script))
    return out


def measure_all(args, loadgen, agent, bare, client_cpus):
    runs = []
    items = plan(args)
    for rnd in range(1, args.runs + 1):
        for server, scenario, workload, protocol, tool, script in items:
            for conns in (1, args.connections):
                port = {"ferry": agent.grpc_port if protocol == "grpc" else agent.http_port,
                        "bare": bare.port}[server]
                label = f"{server}/{scenario}/{protocol}/{tool}/c{conns}"
                pid = agent.proc.pid if server == "ferry" else bare.proc.pid
                cpu0 = ba.cpu_seconds(pid)
                if tool == "wrk":
                    r = run_wrk(client_cpus, port, script, conns, args.duration, args.warmup)
                else:
                    # The bare server echoes the request itself: the JSON body holds the
                    # payload, but no masked word, so the check only applies to ferry.
                    r = run_loadgen(loadgen, client_cpus, port,
                                    "json" if protocol == "http" else protocol, workload, conns,
                                    args.duration, args.warmup, label,
                                    check=server == "ferry")
                # The server's own CPU time per answered request (warm-up included, at the
                # measured rate): unlike requests/s, it barely moves when other processes take
                # turns on the server's core, so 1e6 / cpu_us is what a core of its own serves.
                answered = r["requests_per_s"] * (args.duration + args.warmup)
                r["server_cpu_us"] = round((ba.cpu_seconds(pid) - cpu0) * 1e6 / max(answered, 1),
                                           2)
                r.update({"round": rnd, "server": server, "scenario": scenario,
                          "protocol": protocol, "tool": tool, "connections": conns})
                runs.append(r)
                print(f"bench_seed: round {rnd} {label:<42} {r['requests_per_s']:>9,.0f} req/s  "
                      f"p50 {ba.fmt_us(r['p50_us'])}  p99 {ba.fmt_us(r['p99_us'])}  "
                      f"server CPU {r['server_cpu_us']:.1f} µs/req"
                      + (f"  ERRORS {r['errors']} {r['error_kinds']}" if r["errors"] else ""),
                      flush=True)
    return runs


def medians(runs):
    groups = {}
    for r in runs:
        key = (r["server"], r["scenario"], r["protocol"], r["tool"], r["connections"])
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(("server", "scenario", "protocol", "tool", "connections"), key))
        row["runs"] = len(rs)
        for m in ("requests_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "server_cpu_us"):
            vals = [r[m] for r in rs if r[m] is not None]
            row[m] = round(statistics.median(vals), 1) if vals else None
        row["errors"] = sum(r["errors"] for r in rs)
        out.append(row)
    # ferry's throughput as a fraction of the bare server's, same workload, tool and load.
    bare = {(r["scenario"], r["tool"], r["connections"]): r for r in out if r["server"] == "bare"}
    for r in out:
        b = bare.get((r["scenario"], r["tool"], r["connections"]))
        r["rps_vs_bare"] = round(r["requests_per_s"] / b["requests_per_s"], 3) if b else None
        r["p50_vs_bare"] = round(r["p50_us"] / b["p50_us"], 2) if b and b["p50_us"] else None
        # Per core of its own: the bare server's CPU per request over ferry's.
        r["cpu_vs_bare"] = (round(b["server_cpu_us"] / r["server_cpu_us"], 3)
                            if b and r["server_cpu_us"] else None)
    return out


def print_table(rows, conns):
    head = (f"{'server':<6} {'scenario':<14} {'protocol':<8} {'tool':<8} {'conns':>5} "
            f"{'req/s':>9} {'p50':>9} {'p99':>9} {'p99.9':>9} {'vs bare':>8} "
            f"{'CPU µs/req':>10} {'per core':>9} {'vs bare':>8} {'errors':>6}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        vs = f"{r['rps_vs_bare']:.2f}" if r["rps_vs_bare"] is not None else "-"
        cvs = f"{r['cpu_vs_bare']:.2f}" if r["cpu_vs_bare"] is not None else "-"
        per_core = 1e6 / r["server_cpu_us"] if r["server_cpu_us"] else 0
        print(f"{r['server']:<6} {r['scenario']:<14} {r['protocol']:<8} {r['tool']:<8} "
              f"{r['connections']:>5} {r['requests_per_s']:>9,.0f} {ba.fmt_us(r['p50_us']):>9} "
              f"{ba.fmt_us(r['p99_us']):>9} {ba.fmt_us(r['p999_us']):>9} {vs:>8} "
              f"{r['server_cpu_us']:>10.1f} {per_core:>9,.0f} {cvs:>8} {r['errors']:>6}")
    print()
    print("against the paper (AWS, 2018), ferry with ferry-loadgen, 1 connection p50:")
    by = {(r["server"], r["scenario"], r["protocol"], r["tool"], r["connections"]): r
          for r in rows}
    for scenario, lam, lam_text, zmq, zmq_text in (
            ("noop-1kb", ba.SEED_NOOP_LAMBDA_US, "Lambda 303 ms", ba.SEED_NOOP_ZEROMQ_US,
             "EC2+ZeroMQ 290 µs"),
            ("wordfilter-10", ba.SEED_BATCH10_LAMBDA_SQS_US, "Lambda+SQS 447 ms",
             ba.SEED_BATCH10_ZEROMQ_US, "EC2+ZeroMQ 2.8 ms")):
        for protocol in ("json", "binary", "grpc"):
            r = by.get(("ferry", scenario, protocol, "loadgen", 1))
            if r and r["p50_us"]:
                z = zmq / r["p50_us"]
                zmq_cmp = f"{z:.1f}x faster than" if z >= 1 else f"{1 / z:.1f}x slower than"
                print(f"  {scenario:<14} {protocol:<7} p50 {ba.fmt_us(r['p50_us']):>8}: "
                      f"{lam / r['p50_us']:>8,.0f}x faster than {lam_text}, {zmq_cmp} {zmq_text}")
        r = by.get(("ferry", scenario, "json", "loadgen", conns))
        if r:
            per_core = 1e6 / r["server_cpu_us"] if r["server_cpu_us"] else 0
            print(f"  {scenario:<14} json    {conns} connections: "
                  f"{r['requests_per_s']:,.0f} req/s measured, {per_core:,.0f} per core of its "
                  f"own ({per_core / ba.SEED_NODE_RPS:.1f}x the paper's m5.large, 3,500 req/s)")
    print()


def plot(out_dir, rows, conns):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_seed: matplotlib not installed; skipping the plot")
        return
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for col, (scenario, _, _) in enumerate(WORKLOADS):
        sel = [r for r in rows if r["scenario"] == scenario]
        one = [r for r in sel if r["connections"] == 1]
        many = [r for r in sel if r["connections"] == conns]
        labels = [f"{r['server']}\n{r['protocol']}\n{r['tool']}" for r in one]
        ax = axes[0][col]
        xs = range(len(one))
        ax.bar([x - 0.2 for x in xs], [r["p50_us"] for r in one], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [r["p99_us"] for r in one], 0.4, label="p99")
        seed = ba.SEED_NOOP_ZEROMQ_US if scenario == "noop-1kb" else ba.SEED_BATCH10_ZEROMQ_US
        ax.axhline(seed, color="gray", ls="--", lw=1)
        ax.text(0, seed * 1.05, f"paper: EC2+ZeroMQ {ba.fmt_us(seed)}", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("latency, 1 connection (µs, log)")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_title(f"{scenario}: latency")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        labels = [f"{r['server']}\n{r['protocol']}\n{r['tool']}" for r in many]
        xs = range(len(many))
        colors = ["tab:gray" if r["server"] == "bare" else "tab:blue" for r in many]
        ax.bar([x - 0.2 for x in xs], [r["requests_per_s"] for r in many], 0.4, color=colors,
               label="measured")
        ax.bar([x + 0.2 for x in xs],
               [1e6 / r["server_cpu_us"] if r["server_cpu_us"] else 0 for r in many], 0.4,
               color=colors, alpha=0.45, hatch="//", label="per core of its own (1/CPU per req)")
        ax.legend(fontsize=8)
        ax.axhline(ba.SEED_NODE_RPS, color="gray", ls="--", lw=1)
        ax.text(0, ba.SEED_NODE_RPS * 1.1, "paper: m5.large 3,500 req/s", fontsize=8)
        ax.set_ylabel(f"requests/s, {conns} connections")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_title(f"{scenario}: throughput (grey: bare Beast echo)")
    fig.suptitle("Seed figures re-run: server on 1 core, load generator on another, loopback; "
                 "medians")
    fig.tight_layout()
    fig.savefig(out_dir / "seed.png", dpi=110)
    print(f"bench_seed: wrote {out_dir / 'seed.png'}")


# Self-time categories of a profile, first match wins (symbol text, lower case).
CATEGORIES = [
    ("kernel: TCP/IP over loopback", "[k]", ("tcp", "ip_", "skb", "net", "napi", "loopback",
                                            "sock", "inet", "dev_queue", "bbr", "copy_", "iter",
                                            "datagram", "csum", "__alloc_skb", "kfree", "dst_",
                                            "raw_spin_unlock_irqrestore", "sk_", "release_sock",
                                            "lock_sock", "rcv")),
    ("kernel: epoll, syscalls, scheduler", "[k]", ("",)),
    ("malloc/free", "[.]", ("malloc", "_int_free", "cfree", "unlink_chunk", "operator new",
                            "operator delete", "tcache", "free")),
    ("JSON parse/encode", "[.]", ("simdjson", "appendstring", "json", "parseinfer",
                                  "encodeinfer", "number", "appendnumber")),
    ("Asio/Beast (event loop, HTTP parse/serialise, executors, timers)", "[.]", ("boost::",)),
    ("locks, atomics, shared_ptr, threads", "[.]", ("mutex", "_sp_counted", "futex", "absl::",
                                                    "pthread", "condvar", "atomic", "shared_ptr",
                                                    "sem_", "lll_")),
    ("syscall wrappers, clock, memcpy (libc/vdso)", "[.]", ("__libc", "epoll", "clock_gettime",
                                                           "memmove", "memcpy", "memcmp",
                                                           "memset", "strlen", "recv", "send",
                                                           "read", "write")),
    ("ferry's own code (batching, core, runtime, HTTP session)", "[.]", ("ferry::",)),
    ("other user space", "[.]", ("",)),
]


def categorise(data):
    """Self time of a perf.data file by CATEGORIES: {category: percent}."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none", "-q",
                          "--sort", "sym", "--no-children", "--percent-limit", "0"],
                         capture_output=True, text=True).stdout
    shares = {name: 0.0 for name, _, _ in CATEGORIES}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\[[k.]\])\s+(.*)", line)
        if not m:
            continue
        pct, space, sym = float(m.group(1)), m.group(2), m.group(3).lower()
        for name, want_space, keys in CATEGORIES:
            if space == want_space and any(k in sym for k in keys):
                shares[name] += pct
                break
    return shares


def profile(args, loadgen, pid, port, client_cpus, out_path, check):
    """perf record -g of one server process while ferry-loadgen drives the 1 KB JSON echo.
    Returns ({category: percent}, server CPU µs per request) or None."""
    if shutil.which("perf") is None:
        print("bench_seed: perf not found (Debian linux-perf); skipping the profile")
        return None
    data = out_path.with_suffix(".data")
    cpu0 = ba.cpu_seconds(pid)
    rec = subprocess.Popen(["perf", "record", "-g", "-F", "2000", "-p", str(pid), "-o", str(data),
                            "--", "sleep", str(args.profile)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    r = run_loadgen(loadgen, client_cpus, port, "json", "echo", args.connections, args.profile, 0,
                    "profile", check=check)
    _, err = rec.communicate(timeout=args.profile + 60)
    cpu = ba.cpu_seconds(pid) - cpu0
    if rec.returncode != 0:
        print(f"bench_seed: perf record failed: {err.strip()[-500:]}")
        return None
    cpu_us_per_request = cpu * 1e6 / max(1.0, r["requests_per_s"] * args.profile)
    sections = [("shared object", ["--sort", "dso", "--no-children"]),
                ("self time by symbol", ["--sort", "dso,sym", "--no-children"]),
                ("time including callees", ["--sort", "sym", "--children"])]
    shares = categorise(data)
    with open(out_path, "w") as f:
        f.write(f"{r['requests_per_s']:,.0f} requests/s, {cpu:.2f} CPU s in {args.profile} s, "
                f"{cpu_us_per_request:.1f} CPU µs per request\n\n")
        f.write("==== self time by category ====\n")
        for name, pct in shares.items():
            f.write(f"{pct:6.1f}%  {pct * cpu_us_per_request / 100:6.2f} µs/request  {name}\n")
        f.write("\n")
        for title, opts in sections:
            out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none",
                                  "--percent-limit", "0.5", *opts],
                                 capture_output=True, text=True)
            f.write(f"==== {title} (perf report {' '.join(opts)}) ====\n")
            for line in out.stdout.splitlines():
                if line.startswith("#") and not line.startswith("# Samples"):
                    continue
                # Asio's template names run to thousands of characters: keep the head.
                line = line.rstrip()
                f.write((line[:220] + " ...") if len(line) > 220 else line)
                f.write("\n")
    print(f"bench_seed: wrote {out_path}")
    return shares, cpu_us_per_request, r["requests_per_s"]


def print_profiles(agent, bare):
    """Side by side: where the server's CPU goes per request, ferry against the bare server."""
    print(f"{'CPU µs per request (1 KB JSON echo, loaded)':<66} {'ferry':>8} {'bare':>8}")
    print("-" * 84)
    for name, _, _ in CATEGORIES:
        a = agent[0][name] * agent[1] / 100
        b = bare[0][name] * bare[1] / 100
        print(f"{name:<66} {a:>8.2f} {b:>8.2f}")
    print(f"{'total':<66} {agent[1]:>8.2f} {bare[1]:>8.2f}")
    print(f"{'requests/s during the profile':<66} {agent[2]:>8,.0f} {bare[2]:>8,.0f}")
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("FERRY_BUILD_DIR", "build"),
                   help="build folder holding node-agent/ferry-agent, perf/loadgen/ferry-loadgen "
                        "and perf/bare_echo/bare-echo (default: build)")
    p.add_argument("--runs", type=int, default=3,
                   help="rounds; medians over them (default 3; 0 with --profile: profile only)")
    p.add_argument("--duration", type=float, default=3, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1, help="unmeasured seconds before each run")
    p.add_argument("--connections", type=int, default=32, help="connections of the loaded runs")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the servers")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for the load generators")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--skip-wrk", action="store_true", help="ferry-loadgen only")
    p.add_argument("--open-rates", default="",
                   help="afterwards, an open-loop Poisson sweep of the 1 KB JSON echo at these "
                        "requests/s (comma-separated) on both servers, once")
    p.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                   help="afterwards, perf record -g each server this long under the loaded "
                        "1 KB JSON echo")
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results"),
                   help="folder for CSV, PNG and profile files (default perf/results)")
    args = p.parse_args()

    build = pathlib.Path(args.build_dir)
    if not build.is_absolute():
        build = REPO_ROOT / build
    agent_bin = build / "node-agent" / "ferry-agent"
    loadgen = build / "perf" / "loadgen" / "ferry-loadgen"
    bare_bin = build / "perf" / "bare_echo" / "bare-echo"
    for b in (agent_bin, loadgen, bare_bin):
        if not b.exists():
            sys.exit(f"bench_seed: {b} not found; build it first "
                     "(cmake --build BUILD --target ferry-agent ferry-loadgen bare-echo)")
    if not args.skip_wrk and shutil.which("wrk") is None:
        sys.exit("bench_seed: wrk not found (Debian package wrk), or pass --skip-wrk")
    pin = not args.no_pin and shutil.which("taskset") is not None
    server_cpus = args.server_cpus if pin else None
    client_cpus = args.client_cpus if pin else None
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="ferry-seed-") as tmp:
        tmp = pathlib.Path(tmp)
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name, text in ba.manifests_yaml(64, 0).items():
            (manifests / name).write_text(text)
        agent = ba.start_agent(agent_bin, manifests, tmp / "agent.log", 0, server_cpus)
        bare = BareEcho(bare_bin, server_cpus)
        print(f"bench_seed: ferry-agent http {agent.http_port} grpc {agent.grpc_port}, bare-echo "
              f"{bare.port}" + (f"; servers on CPU {server_cpus}, clients on CPU {client_cpus}"
                                if pin else ""))
        try:
            ba.check_functions(agent.http_url)
            runs = measure_all(args, loadgen, agent, bare, client_cpus)
            if args.open_rates:
                open_sweep(args, loadgen, agent, bare, client_cpus, out_dir / "seed_open.csv")
            if args.profile > 0:
                pa = profile(args, loadgen, agent.proc.pid, agent.http_port, client_cpus,
                             out_dir / "seed_profile_agent.txt", check=True)
                pb = profile(args, loadgen, bare.proc.pid, bare.port, client_cpus,
                             out_dir / "seed_profile_bare.txt", check=False)
                if pa and pb:
                    print_profiles(pa, pb)
        finally:
            agent.terminate()
            bare.terminate()

    if not runs:
        return
    rows = medians(runs)
    print_table(rows, args.connections)
    fields = ["round", "server", "scenario", "protocol", "tool", "connections", "requests_per_s",
              "p50_us", "p90_us", "p99_us", "p999_us", "server_cpu_us", "errors", "error_kinds"]
    ba.write_csv(out_dir / "seed_runs.csv", runs, fields)
    ba.write_csv(out_dir / "seed.csv", rows,
                 ["server", "scenario", "protocol", "tool", "connections", "runs",
                  "requests_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "rps_vs_bare",
                  "p50_vs_bare", "server_cpu_us", "cpu_vs_bare", "errors"])
    print(f"bench_seed: wrote {out_dir / 'seed_runs.csv'} and {out_dir / 'seed.csv'}")
    plot(out_dir, rows, args.connections)
    if any(r["errors"] for r in runs):
        print("bench_seed: WARNING: some runs had errors (see the table); their numbers are not "
              "valid")


if __name__ == "__main__":
    main()
