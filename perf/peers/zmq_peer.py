#!/usr/bin/env python3
"""The seed paper's "best serverful" baseline, reproduced on this machine: a ZeroMQ REQ/REP
round trip (the paper measured 290 us between two EC2 hosts) and a ZeroMQ server that runs the
same dirty-word filter on a batch of 10 messages (2.8 ms in the paper).

    zmq_peer.py --job echo|wordfilter --duration S [--server-cpus 0] [--client-cpus 1]

Starts the server as a child process (pinned with taskset when given CPUs), runs a closed-loop
client for S seconds on one connection, and prints one JSON line:
{"job", "requests", "requests_per_s", "p50_us", "p90_us", "p99_us"}.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import zmq

BLACKLIST = {"darn", "heck", "crap", "dang", "shoot", "frick", "bloody", "bugger", "blast",
             "drat", "rats", "phooey", "fudge", "jeez", "gosh", "golly", "crud", "dagnabbit",
             "poop", "butt"}
WORD = re.compile(r"[A-Za-z0-9']+")
MESSAGES = [f"message {i}: well darn it, that is a heck of a thing to say about the crud"
            for i in range(10)]


def filter_doc(doc):
    count = 0

    def mask(m):
        nonlocal count
        if m.group(0).lower() in BLACKLIST:
            count += 1
            return "*" * len(m.group(0))
        return m.group(0)

    return WORD.sub(mask, doc), count


def serve(port, job):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        msg = sock.recv()
        if msg == b"STOP":
            sock.send(b"")
            return
        if job == "echo":
            sock.send(msg)
        else:
            docs = json.loads(msg)
            out = [filter_doc(d) for d in docs]
            sock.send(json.dumps({"filtered": [o[0] for o in out],
                                  "count": [o[1] for o in out]}).encode())


def pinned(cmd, cpus):
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus] + cmd
    return cmd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--job", choices=["echo", "wordfilter"], required=True)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--server-cpus", default="")
    p.add_argument("--client-cpus", default="")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.port, args.job)
        return
    if args.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    port = args.port or sock.bind_to_random_port("tcp://127.0.0.1")
    if not args.port:
        sock.unbind(sock.getsockopt(zmq.LAST_ENDPOINT))
    server = subprocess.Popen(pinned([sys.executable, __file__, "--serve", "--job", args.job,
                                      "--port", str(port)], args.server_cpus))
    try:
        sock.connect(f"tcp://127.0.0.1:{port}")
        payload = (b"x" * 1024 if args.job == "echo" else json.dumps(MESSAGES).encode())
        sock.send(payload)  # the first round trip waits for the server to bind
        sock.recv()
        warm_end = time.perf_counter() + 1.0
        while time.perf_counter() < warm_end:
            sock.send(payload)
            sock.recv()
        lat = []
        end = time.perf_counter() + args.duration
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            sock.send(payload)
            sock.recv()
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - t_start
        sock.send(b"STOP")
        sock.recv()
    finally:
        server.wait(timeout=10)
    lat.sort()
    q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1e6, 1)
    print(json.dumps({"job": args.job, "requests": len(lat),
                      "requests_per_s": round(len(lat) / elapsed, 1),
                      "p50_us": round(statistics.median(lat) * 1e6, 1), "p90_us": q(0.90),
                      "p99_us": q(0.99)}))


if __name__ == "__main__":
    main()
