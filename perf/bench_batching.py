#!/usr/bin/env python3
"""Benchmark of the adaptive batching delay (docs/batching.md, "Adaptive delay").

One ferry-agent serves several copies of the echo function that differ only in their batching
settings; wrk drives them in closed loop (keep-alive, 1 wrk thread), repeated in rounds so that
drift of a noisy machine hits every configuration alike, and the median of the rounds is kept.

  cheap model (echo, no cost per batch), policy aimd with the manifest defaults vs policy off:
    1 connection p50 and 8 connections throughput;
  fixed cost per batch (echo with delayMicros: 500), 32 connections: aimd with the defaults vs
    policy fixed at a few (maxBatchSize, maxQueueDelayMicros), and vs off.

Prints the ratios against the goals of the adaptive delay and writes <out>/batching.csv.
Agent on CPU 0 and wrk on CPU 1 (taskset) as in perf/bench_agent.py, whose helpers it uses.

  python perf/bench_batching.py [--build-dir build] [--duration 3] [--rounds 3]
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_agent import (REPO_ROOT, WRK_DIR, fmt_us, post_json, run_wrk,  # noqa: E402
                         start_agent, write_csv)

# name -> (batching settings, echo config); batching None = the manifest defaults with policy
# aimd (maxBatchSize 32, maxQueueDelayMicros 1000).
FIXED_COST_US = 500
FIXED = [(8, 500), (16, 1000), (32, 1000), (32, 2000)]
FUNCTIONS = {
    "echo-off": ("{policy: off}", None),
    "echo-aimd": ("{policy: aimd}", None),
    "slow-off": ("{policy: off}", FIXED_COST_US),
    "slow-aimd": ("{policy: aimd}", FIXED_COST_US),
    **{f"slow-fixed-{n}-{d}": (f"{{policy: fixed, maxBatchSize: {n}, maxQueueDelayMicros: {d}}}",
                               FIXED_COST_US) for n, d in FIXED},
}
# (function, connections) measured each round.
PLAN = ([("echo-off", 1), ("echo-aimd", 1), ("echo-off", 8), ("echo-aimd", 8),
         ("slow-aimd", 32), ("slow-off", 32)] +
        [(f"slow-fixed-{n}-{d}", 32) for n, d in FIXED])


def manifest(name, batching, delay_us):
    config = f"\n  config: {{delayMicros: {delay_us}}}" if delay_us else ""
    return (f"apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {{name: {name}}}\n"
            f"spec:\n  runtime: echo{config}\n  batching: {batching}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("FERRY_BUILD_DIR", "build"))
    p.add_argument("--duration", type=int, default=3, help="seconds per run (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the median is kept (default 3)")
    p.add_argument("--agent-cpus", default="0")
    p.add_argument("--wrk-cpus", default="1")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--only", choices=["cheap", "fixed-cost"], help="run one half only")
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results"))
    args = p.parse_args()
    plan = [k for k in PLAN if args.only is None or
            (k[0].startswith("echo-") == (args.only == "cheap"))]

    build = pathlib.Path(args.build_dir)
    if not build.is_absolute():
        build = REPO_ROOT / build
    binary = build / "node-agent" / "ferry-agent"
    if not binary.exists():
        sys.exit(f"bench: {binary} not found; build it first")
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk not found (Debian package wrk)")
    pin = not args.no_pin and shutil.which("taskset") is not None
    agent_cpus = args.agent_cpus if pin else None
    wrk_cpus = args.wrk_cpus if pin else None
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    samples = {key: [] for key in plan}
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name, (batching, delay_us) in FUNCTIONS.items():
            (manifests / f"{name}.yaml").write_text(manifest(name, batching, delay_us))
        agent = start_agent(binary, manifests, tmp / "agent.log", 0, agent_cpus)
        try:
            for name in FUNCTIONS:
                doc = post_json(f"{agent.http_url}/v2/models/{name}/infer", {"inputs": [
                    {"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})
                assert doc["outputs"][0]["data"] == ["x"], doc
            for key in plan:  # warm-up: models learn, AIMD targets settle
                run_wrk(agent.http_url, WRK_DIR / "echo.lua", key[1], 1, wrk_cpus,
                        {"FERRY_MODEL": key[0]})
            for rnd in range(args.rounds):
                for name, conns in plan:
                    stats, _ = run_wrk(agent.http_url, WRK_DIR / "echo.lua", conns, args.duration,
                                       wrk_cpus, {"FERRY_MODEL": name})
                    errors = stats["non2xx"] + stats["socket_errors"]
                    samples[(name, conns)].append(stats)
                    print(f"bench: round {rnd + 1} {name:<20} c={conns:<3} "
                          f"{stats['requests_per_s']:>9,.0f} req/s  p50 {fmt_us(stats['p50_us'])}"
                          f"  p99 {fmt_us(stats['p99_us'])}  errors {errors}")
        finally:
            agent.terminate()

    rows = []
    for (name, conns), runs in samples.items():
        rows.append({"function": name, "connections": conns, "rounds": len(runs),
                     "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
                     "p50_us": statistics.median(r["p50_us"] for r in runs),
                     "p99_us": statistics.median(r["p99_us"] for r in runs),
                     "errors": sum(r["non2xx"] + r["socket_errors"] for r in runs)})
    by = {(r["function"], r["connections"]): r for r in rows}

    print(f"\n{'function':<20} {'conns':>5} {'req/s':>10} {'p50':>10} {'p99':>10} {'errors':>7}")
    for r in rows:
        print(f"{r['function']:<20} {r['connections']:>5} {r['requests_per_s']:>10,.0f} "
              f"{fmt_us(r['p50_us']):>10} {fmt_us(r['p99_us']):>10} {r['errors']:>7}")

    goals = []
    if args.only in (None, "cheap"):
        goals += [
            ("cheap, 1 conn: aimd p50 / off p50", by[("echo-aimd", 1)]["p50_us"] /
             by[("echo-off", 1)]["p50_us"], "<= 1.2"),
            ("cheap, 8 conns: aimd req/s / off req/s", by[("echo-aimd", 8)]["requests_per_s"] /
             by[("echo-off", 8)]["requests_per_s"], ">= 0.9"),
        ]
    if args.only in (None, "fixed-cost"):
        best_fixed = max((by[(f"slow-fixed-{n}-{d}", 32)] for n, d in FIXED),
                         key=lambda r: r["requests_per_s"])
        goals += [
            (f"fixed cost, 32 conns: aimd req/s / best fixed ({best_fixed['function']})",
             by[("slow-aimd", 32)]["requests_per_s"] / best_fixed["requests_per_s"], ">= 0.95"),
            ("fixed cost, 32 conns: aimd req/s / off req/s",
             by[("slow-aimd", 32)]["requests_per_s"] / by[("slow-off", 32)]["requests_per_s"],
             "(info)"),
        ]
    print(f"\n{'ratio (medians of ' + str(args.rounds) + ' rounds)':<72} {'value':>6}  goal")
    for label, value, goal in goals:
        print(f"{label:<72} {value:>6.2f}  {goal}")
    write_csv(out_dir / "batching.csv", rows,
              ["function", "connections", "rounds", "requests_per_s", "p50_us", "p99_us",
               "errors"])
    print(f"\nbench: wrote {out_dir / 'batching.csv'}")


if __name__ == "__main__":
    main()
