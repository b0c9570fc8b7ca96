#!/usr/bin/env python3
"""Gateway benchmark: ferry-control's gateway against calling the agent directly, and failover.

1. Added latency: a 1 KiB KServe v2 JSON echo (perf/wrk/echo.lua), closed loop, one connection,
   keep-alive, wrk --latency; direct-to-agent and through-the-gateway runs alternate in one
   process run (--rounds pairs), and the medians of their p50s are compared.
2. Failover: a client loop sends echo requests through the gateway; one agent is killed with
   kill -9. Reported: time until the routes no longer name it (detected), until the function
   has its replicas ready again elsewhere (re-placed), and the first successful response
   completed after the kill; plus the number of failed client requests (expected 0).
3. Lease expiry: an agent stopped with SIGSTOP (silent, stream still open) is detected only by
   its lease; reported as the time until its routes are withdrawn.

Results: printed, and CSV under perf/results/gateway.csv.
  build/venv/bin/python perf/bench_gateway.py --build-dir build
"""

import argparse
import csv
import http.client
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
sys.path.insert(0, str(REPO_ROOT / "perf"))

from bench_agent import run_wrk  # noqa: E402
from controlproc import (ControlAgent, ControlApi, ControlProcess, control_pb2, run_ferry,  # noqa: E402
                         wait_for)

ECHO = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 0.25, memoryMiB: 64}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: aimd}
  scaling: {minReplicas: 2, maxReplicas: 2, idleSeconds: 300}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
"""
BODY = ('{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"BYTES","data":["' + "x" * 1024 +
        '"]}]}').encode()


def ready_routes(api, fn="echo"):
    return [r for r in api.routes(fn).routes if r.ready]


class ClientLoop(threading.Thread):
    """Back-to-back requests on one keep-alive connection (reconnects after an error)."""

    def __init__(self, hostport):
        super().__init__(daemon=True)
        self.hostport = hostport
        self.stop = threading.Event()
        self.successes = []  # completion times (monotonic)
        self.failures = []

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.hostport, timeout=10)
                conn.request("POST", "/v2/models/echo/infer", BODY,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.successes.append(time.monotonic())
                else:
                    self.failures.append((time.monotonic(), resp.status))
            except Exception as e:  # noqa: BLE001 - counted
                self.failures.append((time.monotonic(), repr(e)))
                conn = None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build-dir", default="build")
    p.add_argument("--rounds", type=int, default=3, help="direct/gateway wrk pairs")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results" / "gateway.csv"))
    args = p.parse_args()
    os.environ["FERRY_BUILD_DIR"] = str(pathlib.Path(args.build_dir).resolve())

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-gw-"))
    (tmp / "fns").mkdir()
    (tmp / "fns" / "echo.yaml").write_text(ECHO)
    control = ControlProcess(tmp / "state", tmp / "control.log").start()
    agents = [ControlAgent(control.address, f"node{i}", tmp / f"node{i}.log",
                           extra_args=["--profile=false"]).start() for i in (1, 2)]
    api = ControlApi(control.address, control_pb2(tmp / "pb"))
    rows = []
    try:
        r = run_ferry(control.address, "apply", "-f", tmp / "fns")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(ready_routes(api)) == 2, 30, "echo ready on both nodes")
        direct_url = f"http://{ready_routes(api)[0].http_address}"

        # 1. Added latency, alternating.
        script = REPO_ROOT / "perf" / "wrk" / "echo.lua"
        direct, gateway = [], []
        for i in range(args.rounds):
            d, _ = run_wrk(direct_url, script, 1, args.duration, None)
            g, _ = run_wrk(control.gateway_url, script, 1, args.duration, None)
            direct.append(d)
            gateway.append(g)
            print(f"round {i + 1}: direct p50 {d['p50_us']:.0f} us p99 {d['p99_us']:.0f} us "
                  f"{d['requests_per_s']:.0f} req/s | gateway p50 {g['p50_us']:.0f} us "
                  f"p99 {g['p99_us']:.0f} us {g['requests_per_s']:.0f} req/s "
                  f"(errors {d['non2xx'] + d['socket_errors'] + g['non2xx'] + g['socket_errors']})")
        med = lambda runs, k: statistics.median(x[k] for x in runs)  # noqa: E731
        for name, runs in (("direct", direct), ("gateway", gateway)):
            rows.append({"metric": f"{name}_p50_us", "value": f"{med(runs, 'p50_us'):.1f}"})
            rows.append({"metric": f"{name}_p99_us", "value": f"{med(runs, 'p99_us'):.1f}"})
            rows.append({"metric": f"{name}_req_per_s", "value": f"{med(runs, 'requests_per_s'):.0f}"})
        added = med(gateway, "p50_us") - med(direct, "p50_us")
        rows.append({"metric": "gateway_added_p50_us", "value": f"{added:.1f}"})

        # 2. Failover after kill -9, under a gateway client loop.
        loop = ClientLoop(control.gateway_hostport)
        loop.start()
        wait_for(lambda: len(loop.successes) >= 50, 10, "client loop running")
        victim = agents[0]
        t0 = time.monotonic()
        victim.kill9()
        wait_for(lambda: all(r.node_id != victim.node_name for r in api.routes("echo").routes),
                 10, "routes withdrawn", poll_s=0.002)
        t_detect = time.monotonic() - t0
        wait_for(lambda: len(ready_routes(api)) == 2, 20, "re-placed", poll_s=0.002)
        t_replaced = time.monotonic() - t0
        first_ok = wait_for(lambda: next((t for t in list(loop.successes) if t > t0), None), 10,
                            "a response after the kill", poll_s=0.001)
        n = len(loop.successes)
        wait_for(lambda: len(loop.successes) >= n + 50, 10, "client loop after failover")
        loop.stop.set()
        loop.join(10)
        rows += [{"metric": "failover_detected_ms", "value": f"{t_detect * 1e3:.1f}"},
                 {"metric": "failover_replaced_ready_ms", "value": f"{t_replaced * 1e3:.1f}"},
                 {"metric": "failover_first_ok_after_kill_ms", "value": f"{(first_ok - t0) * 1e3:.1f}"},
                 {"metric": "failover_client_failures", "value": str(len(loop.failures))},
                 {"metric": "failover_client_requests", "value": str(len(loop.successes))}]

        # 3. Lease expiry: a silent agent (SIGSTOP keeps its connection open).
        spare = ControlAgent(control.address, "node3", tmp / "node3.log",
                             extra_args=["--profile=false"]).start()
        silent = agents[1]
        t0 = time.monotonic()
        silent.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: all(r.node_id != silent.node_name for r in api.routes("echo").routes),
                 10, "routes withdrawn from the silent node", poll_s=0.002)
        t_lease = time.monotonic() - t0
        silent.proc.send_signal(signal.SIGKILL)
        silent.proc.wait()
        rows.append({"metric": "lease_expiry_detected_ms", "value": f"{t_lease * 1e3:.1f}"})
        spare.terminate()
    finally:
        api.close()
        for a in agents:
            if a.alive():
                a.terminate()
        control.terminate()

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["metric", "value"])
        w.writeheader()
        w.writerows(rows)
    print("\nmetric,value")
    for row in rows:
        print(f"{row['metric']},{row['value']}")
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
