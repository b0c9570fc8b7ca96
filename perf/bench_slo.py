#!/usr/bin/env python3
"""Batching policies against a latency SLO under open-loop Poisson load (docs/perf.md,
"Batching policies against an SLO").

One ferry-agent serves copies of two functions that differ only in their batching:

  mlp   the examples' network (examples/mlp.yaml: 64 -> 256 -> 256 -> 16, relu, relu, none;
        weights from examples/make_examples.py) with its SLO (examples/mlp.slo.yaml: p99 10 ms);
        one FP32 row [1, 64] per request;
  slow  echo with `delayMicros: 500` (a fixed cost of 500 us per batch), same SLO target;

each under policy off, policy fixed at several (maxBatchSize, maxQueueDelayMicros), and policy
aimd with the manifest's settings (mlp: maxBatchSize 128, 1000 us; echo: the defaults 32 /
1000 us). For each function it first measures capacity (closed loop, --capacity-connections,
the best configuration's throughput), then drives every configuration with ferry-loadgen open
loop, Poisson arrivals at 25 %, 50 %, 80 % and 95 % of that capacity, latency from each
request's scheduled send time. From every latency it computes:

  goodput      requests answered within the SLO target per second of the window
  attainment   those requests / every request scheduled in the window (errors and requests
               never answered count as misses)
  p50 / p99    of the answered requests

and checks the goals of issue 7: aimd goodput >= 0.95 x the best fixed configuration in
hindsight at every rate, and aimd attainment >= 99.9 % wherever any configuration reaches it.

Writes <out>/slo.csv (one row per run, with the machine's load average), slo_cdf.csv (latency
CDF points), and PNG plots (matplotlib): slo_<function>.png (goodput, attainment, p99 against
offered load) and slo_cdf_<function>.png. Agent on CPU 0, ferry-loadgen on CPU 1 (taskset).

  python perf/bench_slo.py [--build-dir build] [--duration 3] [--rounds 1]
"""

import argparse
import csv
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_agent import REPO_ROOT, start_agent, write_csv  # noqa: E402

SLO_MS = 10.0  # examples/mlp.slo.yaml: latency p99 10 ms
FRACTIONS = [0.25, 0.50, 0.80, 0.95]
MLP_FIXED = [(8, 250), (16, 500), (32, 1000), (64, 2000), (128, 1000)]
SLOW_FIXED = [(8, 500), (16, 1000), (32, 1000), (32, 2000)]
FIXED_COST_US = 500

SLO_YAML = """apiVersion: ferry.dev/v1
kind: SLO
metadata: {{name: {name}}}
spec:
  latency: {{percentile: 99, targetMillis: {target}}}
  onOverload: reject
"""


def mlp_manifest(name, batching, model_path):
    return (f"apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {{name: {name}}}\n"
            f"spec:\n  runtime: mlp\n  model: {{uri: \"{model_path.as_uri()}\"}}\n"
            f"  batching: {batching}\n  slo: {{file: slo.yaml}}\n"
            f"  config:\n    activations: [relu, relu, none]\n    inputName: input\n"
            f"    outputName: output\n")


def slow_manifest(name, batching):
    return (f"apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {{name: {name}}}\n"
            f"spec:\n  runtime: echo\n  config: {{delayMicros: {FIXED_COST_US}}}\n"
            f"  batching: {batching}\n  slo: {{file: slo.yaml}}\n")


def configs(workload):
    """(config label, batching YAML) of one workload; aimd = the manifest's own settings."""
    fixed = MLP_FIXED if workload == "mlp" else SLOW_FIXED
    aimd = ("{maxBatchSize: 128, maxQueueDelayMicros: 1000, policy: aimd}" if workload == "mlp"
            else "{policy: aimd}")
    out = [("off", "{policy: off}"), ("aimd", aimd)]
    out += [(f"fixed-{n}-{d}", f"{{policy: fixed, maxBatchSize: {n}, maxQueueDelayMicros: {d}}}")
            for n, d in fixed]
    return out


# --- ferry-loadgen and the SLO metrics (also used by perf/bench_peers.py) ----------------------


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus else []


def run_loadgen(loadgen, cpus, port, args, raw_path=None, timeout=120):
    """Runs ferry-loadgen once; returns its CSV row (dict) and, with raw_path, the latencies
    in microseconds."""
    with tempfile.TemporaryDirectory(prefix="ferry-slo-lg-") as tmp:
        csv_path = pathlib.Path(tmp) / "run.csv"
        raw = pathlib.Path(raw_path) if raw_path else pathlib.Path(tmp) / "raw.csv"
        cmd = taskset(cpus) + [str(loadgen), "--port", str(port), "--csv", str(csv_path),
                               "--raw", str(raw)] + [str(a) for a in args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"ferry-loadgen failed ({out.returncode}): {' '.join(cmd)}\n"
                               f"{out.stdout}\n{out.stderr}")
        with open(csv_path) as f:
            row = list(csv.DictReader(f))[-1]
        with open(raw) as f:
            next(f)
            lat = [float(line.rsplit(",", 1)[1]) for line in f if line.strip()]
    return row, lat


def slo_metrics(row, latencies_us, slo_us, duration_s):
    """Goodput, attainment and percentiles of one open-loop run."""
    ok = int(row["ok"])
    errors = int(row["errors"])
    within = sum(1 for v in latencies_us if v <= slo_us)
    scheduled = ok + errors
    lat = sorted(latencies_us)

    def pct(q):
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, max(0, int(-(-q * len(lat) // 1)) - 1))]

    return {
        "offered_rps": float(row["offered_rps"]),
        "throughput_rps": float(row["throughput_rps"]),
        "goodput_rps": within / duration_s,
        "attainment": within / scheduled if scheduled else float("nan"),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "ok": ok,
        "errors": errors,
        "error_kinds": row["error_kinds"],
        "late": int(row["late"]),
    }


def cdf_points(latencies_us, n=200):
    """n (latency, fraction) points of the empirical CDF, evenly spaced in rank."""
    lat = sorted(latencies_us)
    if not lat:
        return []
    out = []
    for i in range(n):
        q = (i + 1) / n
        k = min(len(lat) - 1, int(q * len(lat)) - 1 if q * len(lat) >= 1 else 0)
        out.append((lat[k], q))
    return out


def batch_counters(base_url, name):
    """(batches, tasks) the agent has run for function `name` (its /metrics counters)."""
    import urllib.request
    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=10).read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if f'model="{name}"' not in line:
            continue
        if line.startswith("ferry_inference_batch_size_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ferry_inference_batch_size_sum"):
            total = float(line.rsplit(" ", 1)[1])
    return count, total


def add_priority_args(p):
    """--fifo and --nice, shared with bench_peers.py."""
    p.add_argument("--fifo", action="store_true",
                   help="run the servers and ferry-loadgen under SCHED_FIFO (needs root)")
    p.add_argument("--nice", type=int, default=0,
                   help="run the servers and ferry-loadgen at this niceness (e.g. -10 on a "
                        "machine shared with niced builds; negative needs root)")


def apply_priority(args):
    """Applies --nice and --fifo to this process; every process started later inherits them."""
    if args.nice:
        try:
            os.nice(args.nice)  # inherited by every process started below
        except PermissionError:
            sys.exit("--nice below 0 needs root (CAP_SYS_NICE)")
    if args.fifo:
        # Real-time priority 1, inherited by every process started below: on a machine shared
        # with other work (builds), a woken server or client thread then runs at once instead of
        # after a neighbour's time slice. The kernel's RT throttling still leaves others 5 %.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            sys.exit("--fifo needs root (CAP_SYS_NICE)")


def loadavg():
    return os.getloadavg()[0]


def fmt_us(us):
    if us != us:  # NaN
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


# --- the experiment ------------------------------------------------------------------------------


def workload_args(workload):
    if workload == "mlp":
        return ["--protocol", "json", "--workload", "mlp", "--rows", "1"]
    return ["--protocol", "json", "--workload", "echo", "--payload-bytes", "1024"]


def measure_capacity(args, loadgen, port, workload, names):
    """Closed loop, every configuration; the best throughput is the capacity."""
    best = 0.0
    for cfg, name in names:
        row, _ = run_loadgen(loadgen, args.loadgen_cpus, port, workload_args(workload) + [
            "--model", name, "--mode", "closed", "--connections", args.capacity_connections,
            "--warmup", args.warmup, "--duration", args.duration, "--drain", 2])
        rps = float(row["throughput_rps"])
        print(f"bench_slo: capacity {workload:<4} {cfg:<16} closed c={args.capacity_connections}: "
              f"{rps:>9,.0f} req/s  p99 {fmt_us(float(row['p99_us']))}  errors {row['errors']}",
              flush=True)
        best = max(best, rps)
    return best


def plot(out_dir, rows, cdfs, workloads):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_slo: matplotlib not installed: no plots")
        return []
    written = []
    for w in workloads:
        mine = [r for r in rows if r["workload"] == w]
        cfgs = list(dict.fromkeys(r["config"] for r in mine))
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        markers = "osv^<>Dph*"
        for i, cfg in enumerate(cfgs):
            pts = sorted((r for r in mine if r["config"] == cfg), key=lambda r: r["offered_rps"])
            x = [r["offered_rps"] for r in pts]
            # Lines often coincide (every configuration meets the SLO): distinct markers and
            # dashes keep each visible.
            style = dict(marker=markers[i % len(markers)], markersize=7 if cfg == "aimd" else 5,
                         linewidth=2.5 if cfg == "aimd" else 1.2,
                         linestyle="-" if cfg in ("aimd", "off") else "--",
                         color="black" if cfg == "aimd" else None, alpha=0.85)
            axes[0].plot(x, [r["goodput_rps"] for r in pts], label=cfg, **style)
            axes[1].plot(x, [100 * r["attainment"] for r in pts], label=cfg, **style)
            axes[2].plot(x, [r["p99_us"] / 1000 for r in pts], label=cfg, **style)
        axes[0].set_ylabel(f"goodput (req/s within {SLO_MS:g} ms)")
        axes[1].set_ylabel(f"% of requests within {SLO_MS:g} ms")
        axes[1].set_ylim(0, 101)
        axes[2].set_ylabel("p99 latency (ms)")
        axes[2].set_yscale("log")
        axes[2].axhline(SLO_MS, color="red", linestyle="--", linewidth=0.8)
        for ax in axes:
            ax.set_xlabel("offered load (req/s, Poisson)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{w}: batching policies against a {SLO_MS:g} ms SLO (agent on 1 core)")
        fig.tight_layout()
        path = out_dir / f"slo_{w}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fracs = sorted({c[1] for c in cdfs if c[0] == w})
        fig, axes = plt.subplots(1, len(fracs), figsize=(4.2 * len(fracs), 4), sharey=True)
        for ax, frac in zip(axes if len(fracs) > 1 else [axes], fracs):
            for cfg in cfgs:
                pts = cdfs.get((w, frac, cfg))
                if not pts:
                    continue
                ax.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], label=cfg,
                        linewidth=2.5 if cfg == "aimd" else 1.2,
                        color="black" if cfg == "aimd" else None)
            ax.axvline(SLO_MS, color="red", linestyle="--", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, from scheduled send)")
            ax.set_title(f"{int(frac * 100)} % of capacity")
            ax.grid(alpha=0.3)
        (axes[0] if len(fracs) > 1 else axes).set_ylabel("fraction of requests")
        (axes[0] if len(fracs) > 1 else axes).legend(fontsize=7)
        fig.suptitle(f"{w}: latency CDFs")
        fig.tight_layout()
        path = out_dir / f"slo_cdf_{w}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("FERRY_BUILD_DIR", "build"),
                   help="folder holding node-agent/ferry-agent and perf/loadgen/ferry-loadgen")
    p.add_argument("--duration", type=float, default=3, help="measured seconds per run (3)")
    p.add_argument("--warmup", type=float, default=1, help="warm-up seconds per run (1)")
    p.add_argument("--drain", type=float, default=2,
                   help="seconds after the window for the last answers (2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds of the open-loop runs; medians are kept (1)")
    p.add_argument("--capacity-connections", type=int, default=64)
    p.add_argument("--capacity", type=str, default="",
                   help="skip the capacity runs: mlp=RPS,slow=RPS")
    p.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    p.add_argument("--only", choices=["mlp", "slow"], help="one workload only")
    p.add_argument("--agent-cpus", default="0")
    p.add_argument("--loadgen-cpus", default="1")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    add_priority_args(p)
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results"))
    args = p.parse_args()
    apply_priority(args)
    fractions = [float(f) for f in args.fractions.split(",")]
    workloads = [args.only] if args.only else ["mlp", "slow"]

    build = pathlib.Path(args.build_dir)
    if not build.is_absolute():
        build = REPO_ROOT / build
    agent_bin = build / "node-agent" / "ferry-agent"
    loadgen = build / "perf" / "loadgen" / "ferry-loadgen"
    for b in (agent_bin, loadgen):
        if not b.exists():
            sys.exit(f"bench_slo: {b} not found; build it first "
                     "(cmake --build BUILD --target ferry-agent ferry-loadgen)")
    model = REPO_ROOT / "examples" / "models" / "mlp.safetensors"
    if "mlp" in workloads and not model.exists():
        sys.exit(f"bench_slo: {model} not found; run examples/make_examples.py first")
    pin = not args.no_pin and shutil.which("taskset") is not None
    if not pin:
        args.agent_cpus = args.loadgen_cpus = None
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One BLAS thread: the agent has one core, and BLAS threads on it would only contend.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

    capacity = {}
    for part in filter(None, args.capacity.split(",")):
        k, v = part.split("=")
        capacity[k] = float(v)

    rows, samples, cdfs = [], {}, {}
    load_seen = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="ferry-bench-slo-") as tmp:
        tmp = pathlib.Path(tmp)
        manifests = tmp / "manifests"
        manifests.mkdir()
        (manifests / "slo.yaml").write_text(SLO_YAML.format(name="slo", target=int(SLO_MS)))
        names = {}
        for w in workloads:
            names[w] = []
            for cfg, batching in configs(w):
                name = f"{w}-{cfg}"
                text = (mlp_manifest(name, batching, model) if w == "mlp"
                        else slow_manifest(name, batching))
                (manifests / f"{name}.yaml").write_text(text)
                names[w].append((cfg, name))
        agent = start_agent(agent_bin, manifests, tmp / "agent.log", 0, args.agent_cpus)
        try:
            for w in workloads:
                if w not in capacity:
                    capacity[w] = measure_capacity(args, loadgen, agent.http_port, w, names[w])
                print(f"bench_slo: capacity of {w}: {capacity[w]:,.0f} req/s "
                      f"(load average {loadavg():.2f})", flush=True)
            for rnd in range(args.rounds):
                for w in workloads:
                    for frac in fractions:
                        rate = round(capacity[w] * frac)
                        for cfg, name in names[w]:
                            load_before = loadavg()
                            b0 = batch_counters(agent.http_url, name)
                            row, lat = run_loadgen(
                                loadgen, args.loadgen_cpus, agent.http_port,
                                workload_args(w) + [
                                    "--model", name, "--rates", rate, "--connections", 64,
                                    "--max-connections", 2048, "--warmup", args.warmup,
                                    "--duration", args.duration, "--drain", args.drain,
                                    "--seed", 1 + rnd, "--label", name])
                            m = slo_metrics(row, lat, SLO_MS * 1000, args.duration)
                            b1 = batch_counters(agent.http_url, name)
                            # Over the whole run (warm-up and drain included).
                            m["mean_batch"] = ((b1[1] - b0[1]) / (b1[0] - b0[0])
                                               if b1[0] > b0[0] else float("nan"))
                            load_seen.append(loadavg())
                            m.update(workload=w, config=cfg, fraction=frac, round=rnd + 1,
                                     capacity_rps=capacity[w], loadavg_1m=load_before)
                            samples.setdefault((w, frac, cfg), []).append(m)
                            if rnd == 0:
                                cdfs[(w, frac, cfg)] = cdf_points(lat)
                            print(f"bench_slo: r{rnd + 1} {w:<4} {int(frac * 100):>3}% "
                                  f"{rate:>7,} req/s {cfg:<16} goodput {m['goodput_rps']:>8,.0f}"
                                  f"  within {100 * m['attainment']:6.2f}%  p50 "
                                  f"{fmt_us(m['p50_us']):>9}  p99 {fmt_us(m['p99_us']):>9}  "
                                  f"batch {m['mean_batch']:5.1f}  late {m['late']}  "
                                  f"errors {m['errors']} "
                                  f"{m['error_kinds']}",
                                  flush=True)
        finally:
            agent.terminate()

    # Medians over rounds.
    for (w, frac, cfg), runs in samples.items():
        r = dict(runs[0])
        for k in ("throughput_rps", "goodput_rps", "attainment", "p50_us", "p99_us", "p999_us",
                  "mean_batch", "loadavg_1m"):
            r[k] = statistics.median(x[k] for x in runs)
        r["rounds"] = len(runs)
        r["errors"] = sum(x["errors"] for x in runs)
        rows.append(r)

    fields = ["workload", "config", "fraction", "capacity_rps", "offered_rps", "rounds",
              "throughput_rps", "goodput_rps", "attainment", "p50_us", "p99_us", "p999_us",
              "mean_batch", "errors", "error_kinds", "late", "loadavg_1m"]
    write_csv(out_dir / "slo.csv", rows, fields)
    with open(out_dir / "slo_cdf.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["workload", "fraction", "config", "latency_us", "cdf"])
        for (w, frac, cfg), pts in cdfs.items():
            for lat, q in pts:
                wr.writerow([w, frac, cfg, f"{lat:.1f}", f"{q:.4f}"])

    print(f"\n{'workload':<6} {'load':>5} {'config':<16} {'offered':>8} {'goodput':>9} "
          f"{'within':>8} {'p50':>9} {'p99':>9} {'batch':>6}")
    for r in rows:
        print(f"{r['workload']:<6} {int(r['fraction'] * 100):>4}% {r['config']:<16} "
              f"{r['offered_rps']:>8,.0f} {r['goodput_rps']:>9,.0f} "
              f"{100 * r['attainment']:>7.2f}% {fmt_us(r['p50_us']):>9} {fmt_us(r['p99_us']):>9} "
              f"{r['mean_batch']:>6.1f}")

    print("\ngoals: aimd goodput / best fixed in hindsight >= 0.95; aimd within SLO >= 99.9 % "
          "where any configuration reaches it")
    for w in workloads:
        for frac in fractions:
            here = {r["config"]: r for r in rows if r["workload"] == w and r["fraction"] == frac}
            fixed = [r for c, r in here.items() if c.startswith("fixed-")]
            best = max(fixed, key=lambda r: r["goodput_rps"])
            aimd = here["aimd"]
            reached = [c for c, r in here.items() if r["attainment"] >= 0.999]
            att_ok = aimd["attainment"] >= 0.999 or not reached
            if best["goodput_rps"] > 0:
                ratio = aimd["goodput_rps"] / best["goodput_rps"]
                verdict = f"{ratio:.3f} [{'ok' if ratio >= 0.95 else 'MISSED'}]"
            else:
                verdict = "n/a (no fixed configuration answers within the SLO)"
            print(f"  {w:<4} {int(frac * 100):>3}%: aimd/best fixed ({best['config']}) = "
                  f"{verdict}; aimd within "
                  f"{100 * aimd['attainment']:.2f}%, >= 99.9 % reached by "
                  f"{','.join(reached) or 'none'} [{'ok' if att_ok else 'MISSED'}]")
    print(f"\nbench_slo: load average (1 min) during the runs: {min(load_seen):.2f} to "
          f"{max(load_seen):.2f}")
    for path in plot(out_dir, rows, cdfs, workloads):
        print(f"bench_slo: wrote {path}")
    print(f"bench_slo: wrote {out_dir / 'slo.csv'}, {out_dir / 'slo_cdf.csv'}")


if __name__ == "__main__":
    main()
