#!/usr/bin/env python3
"""PNG plots of one ferry-sim output folder (the CSVs written by `ferry-sim --out DIR`).

timeline.png: live replicas and cost per hour over time, one line per policy.
attainment.png: the distribution of per-function SLO attainment, one line per policy.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    args = ap.parse_args()
    policies = [r["policy"] for r in read(os.path.join(args.dir, "summary.csv"))]

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


if __name__ == "__main__":
    main()
