#!/usr/bin/env python3
"""PNG plots of one ferry-sim output folder (the CSVs written by `ferry-sim --out DIR`).

timeline.png: live replicas and cost per hour over time, one line per policy.
attainment.png: the distribution of per-function SLO attainment, one line per policy.
misses.png: requests that missed the SLO, by cause (the simulator's MissCause), per policy.
oracle.png (when DIR holds oracle.csv from `ferry-sim --oracle N --out DIR`): the distribution of
  ferry's placement cost over the exhaustive cheapest feasible assignment.
With --tradeoff OUT.png DIR...: SLO attainment (steady state when measured) against the measured
  utilisation of the replicas, one point per folder, labelled with the folder name.
"""
import argparse
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# perf/sim/sim.h MissCause, in order.
CAUSES = ["held (cold start)", "retried (node failure)", "hardware too slow",
          "batch too large", "execution noise", "router (idle replica passed)",
          "scale-up lag (replicas starting)", "burst over provisioned capacity"]


def plot_misses(d, rows):
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(rows)
    for c, name in enumerate(CAUSES):
        col = f"miss_{c}"
        vals = [100.0 * float(r.get(col, 0) or 0) / max(1.0, float(r["arrivals"])) for r in rows]
        if not any(vals):
            continue
        ax.bar([r["policy"] for r in rows], vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("requests over the SLO (% of arrivals)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "misses.png"), dpi=110)


def plot_oracle(d):
    rows = read(os.path.join(d, "oracle.csv"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for col, label in (("ratio", "PlaceOne without the need (before)"),
                       ("ratio_need", "PlaceOne with the need, as the controller calls it")):
        vals = sorted(float(r[col]) for r in rows if float(r[col]) > 0)
        n = len(vals)
        ax.plot(vals, [(i + 1) / n for i in range(n)], label=label)
    ax.axvline(1.05, color="grey", linestyle=":", label="1.05x")
    ax.set_xscale("log")
    ax.set_xlabel("ferry cost / cheapest feasible assignment")
    ax.set_ylabel("fraction of instances")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "oracle.png"), dpi=110)


def plot_tradeoff(out, dirs):
    fig, ax = plt.subplots(figsize=(7, 4))
    for d in dirs:
        for r in read(os.path.join(d, "summary.csv")):
            steady = r.get("steady_slo_attainment")
            att = float(steady) if steady and float(r.get("steady_arrivals", 0)) > 0 else float(
                r["slo_attainment"])
            u = 100 * float(r["slo_capacity_utilization"])
            ax.plot(u, 100 * att, "o")
            ax.annotate(f"{os.path.basename(d.rstrip('/'))} {r['policy']}", (u, 100 * att),
                        fontsize=7)
    ax.set_xlabel("load / capacity within the SLO of the ready replicas (%)")
    ax.set_ylabel("requests within the SLO (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir", nargs="+")
    ap.add_argument("--tradeoff", help="write the attainment/utilisation plot of the folders here")
    args = ap.parse_args()
    if args.tradeoff:
        plot_tradeoff(args.tradeoff, args.dir)
        return
    args.dir = args.dir[0]
    if not os.path.exists(os.path.join(args.dir, "summary.csv")):
        if os.path.exists(os.path.join(args.dir, "oracle.csv")):
            plot_oracle(args.dir)
        return
    summary = read(os.path.join(args.dir, "summary.csv"))
    policies = [r["policy"] for r in summary]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for p in policies:
        rows = read(os.path.join(args.dir, f"{p}_timeline.csv"))
        t = [float(r["t_s"]) for r in rows]
        ax1.plot(t, [int(r["replicas"]) for r in rows], label=p)
        ax2.plot(t, [float(r["cost_per_hour"]) for r in rows], label=p)
    ax1.set_ylabel("live replicas")
    ax2.set_ylabel("cost ($/h)")
    ax2.set_xlabel("virtual time (s)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "timeline.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in policies:
        rows = read(os.path.join(args.dir, f"{p}_functions.csv"))
        att = sorted(float(r["attainment"]) for r in rows if int(r["arrivals"]) > 0)
        n = len(att)
        ax.plot(att, [(i + 1) / n for i in range(n)], label=p)
    ax.set_xlabel("per-function SLO attainment")
    ax.set_ylabel("fraction of functions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "attainment.png"), dpi=110)
    plot_misses(args.dir, summary)
    if os.path.exists(os.path.join(args.dir, "oracle.csv")):
        plot_oracle(args.dir)


if __name__ == "__main__":
    main()
