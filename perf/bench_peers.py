#!/usr/bin/env python3
"""ferry beside the serving systems users would pick instead, on this machine, with the same
load generator, in one run (docs/perf.md, "Peers on the same machine").

Systems (each installed by perf/peers/install.sh into its own virtualenv under build/peers/):

  ferry      ferry-agent: echo (batching defaults: aimd, maxBatchSize 32, 1000 us) and the
             examples' mlp (examples/mlp.yaml: aimd, 128, 1000 us, SLO p99 10 ms)
  mlserver   Seldon MLServer, custom MLModel runtimes, adaptive batching (max_batch_size,
             max_batch_time as ferry's)
  rayserve   Ray Serve, @serve.batch (max_batch_size, batch_wait_timeout_s as ferry's) behind a
             FastAPI ingress taking KServe v2 JSON
  pytriton   NVIDIA PyTriton (Triton Inference Server + Python callables), dynamic batcher
             (max_batch_size, max_queue_delay_microseconds as ferry's)
  bentoml    BentoML, batchable APIs (max_batch_size as ferry's; its wait is adaptive, bounded
             by max_latency_ms = the SLO target)

Every system serves the same two functions: `echo` (one 1 KiB BYTES element in, the same out)
and `mlp` (64 -> 256 -> 256 -> 16, relu, relu, none, over examples/models/mlp.safetensors; the
peers run a NumPy forward pass, perf/peers/peer_common.py). Each server runs alone on CPU 0
(taskset, with every process it starts); ferry-loadgen runs on CPU 1 and speaks KServe v2 JSON
to all of them (PyTriton gets the echo tensor as [1, 1]: Triton's batching needs a batch
dimension).

Per system and function: one closed-loop client (unloaded latency), open-loop Poisson runs at
fixed rates (--rates: p50, p99), then a
sweep of rates doubling from --sweep-start until fewer than 99 % of the requests meet the SLO
(10 ms), or --sweep-max, then --bisect steps between the last rate that met it and the first
that did not: the maximum goodput (requests answered within 10 ms per second) over the sweep is
the system's "max throughput within the SLO". Ratios are to ferry.

Writes <out>/peers.csv (every run, with the machine's load average) and peers_summary.csv.

  python perf/peers/install.sh && python perf/bench_peers.py [--build-dir build]
"""

import argparse
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_agent import REPO_ROOT, start_agent, write_csv  # noqa: E402
from bench_slo import (SLO_MS, add_priority_args, apply_priority, fmt_us,  # noqa: E402
                       loadavg, run_loadgen, slo_metrics)

PEERS_DIR = REPO_ROOT / "perf" / "peers"
SYSTEMS = ["ferry", "mlserver", "rayserve", "pytriton", "bentoml"]
WORKLOADS = ["echo", "mlp"]

ECHO_YAML = """apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  batching: {policy: aimd}
"""
MLP_YAML = """apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: mlp}}
spec:
  runtime: mlp
  model: {{uri: "{uri}"}}
  batching: {{maxBatchSize: 128, maxQueueDelayMicros: 1000, policy: aimd}}
  slo: {{file: mlp.slo.yaml}}
  config:
    activations: [relu, relu, none]
    inputName: input
    outputName: output
"""


def free_port(span=3):
    """A loopback port p with p .. p + span - 1 free (servers that also open gRPC/metrics)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span >= 65535:
            continue
        ok = True
        for p in range(port + 1, port + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port range")


def request_body(workload, batch_dim=False):
    if workload == "echo":
        shape = [1, 1] if batch_dim else [1]
        return {"inputs": [{"name": "INPUT0", "shape": shape, "datatype": "BYTES",
                            "data": ["x" * 1024]}]}
    return {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                        "data": [((i * 37) % 256 - 128) / 128 for i in range(64)]}]}


def ready(port, batch_dim):
    """Both functions answer 200."""
    import json
    for w in WORKLOADS:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/{w}/infer",
            data=json.dumps(request_body(w, batch_dim)).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status != 200:
                    return False
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
    return True


class PeerServer:
    """One peer's server process group on the server CPUs; stopped with its whole group."""

    def __init__(self, name, venv, cpus, log_path, model_path):
        self.name, self.venv, self.log_path = name, venv, log_path
        self.port = free_port()
        self.batch_dim = name == "pytriton"
        py = str(venv / "bin" / "python")
        env = dict(os.environ, PEER_MLP_MODEL=str(model_path), PYTHONUNBUFFERED="1",
                   OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cwd = None
        if name == "bentoml":
            cmd = [str(venv / "bin" / "bentoml"), "serve", "serve_bentoml:Peer", "--host",
                   "127.0.0.1", "--port", str(self.port)]
            cwd = str(PEERS_DIR)
        else:
            cmd = [py, str(PEERS_DIR / f"serve_{name}.py"), "--port", str(self.port)]
        if name == "rayserve":
            # Ray starts its workers at nice 15 by default; on a machine shared with other work
            # they would then get almost no CPU. Every other server runs at the default nice.
            env["RAY_worker_niceness"] = "0"
        if name == "pytriton":
            # Triton's Python backend stub links libpython3.11 and finds the system's (3.11.2);
            # this virtualenv's interpreter (and stdlib) may be another 3.11 release, and the
            # stub then fails with "AttributeError: '_thread.RLock' object has no attribute
            # '_recursion_count'". Point it at the virtualenv's own libpython folder.
            libdir = subprocess.run(
                [py, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                capture_output=True, text=True).stdout.strip()
            env["LD_LIBRARY_PATH"] = libdir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        if cpus:
            cmd = ["taskset", "-c", cpus] + cmd
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            if ready(self.port, self.batch_dim):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # Whatever the group still holds (Ray's and Triton's helpers) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()


def log_tail(path, n=15):
    try:
        lines = pathlib.Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])


def loadgen_args(workload, batch_dim):
    if workload == "echo":
        return ["--protocol", "json", "--workload", "echo", "--payload-bytes", 1024] + (
            ["--batch-dim"] if batch_dim else [])
    return ["--protocol", "json", "--workload", "mlp", "--rows", 1]


def measure(args, loadgen, system, port, batch_dim, rows):
    """Fixed rates, then the sweep, for both functions of one running server."""
    for w in WORKLOADS:
        def run(rate, kind):
            lb = loadavg()
            try:
                row, lat = run_loadgen(
                    loadgen, args.loadgen_cpus, port, loadgen_args(w, batch_dim) + [
                        "--model", w, "--rates", rate, "--connections", 64,
                        "--max-connections", 4096, "--warmup", args.warmup, "--duration",
                        args.duration, "--drain", args.drain, "--label", f"{system}-{w}"],
                    timeout=args.warmup + args.duration + args.drain + 120)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"bench_peers: {system} {w} {rate}: {e}", flush=True)
                return None
            m = slo_metrics(row, lat, SLO_MS * 1000, args.duration)
            m.update(system=system, workload=w, kind=kind, loadavg_1m=lb)
            rows.append(m)
            print(f"bench_peers: {system:<9} {w:<4} {kind:<5} {rate:>7,} req/s: goodput "
                  f"{m['goodput_rps']:>8,.0f}  within {100 * m['attainment']:6.2f}%  p50 "
                  f"{fmt_us(m['p50_us']):>9}  p99 {fmt_us(m['p99_us']):>9}  errors "
                  f"{m['errors']} {m['error_kinds']}  (load {lb:.1f})", flush=True)
            return m

        # Unloaded: one closed-loop client.
        try:
            row, lat = run_loadgen(
                loadgen, args.loadgen_cpus, port, loadgen_args(w, batch_dim) + [
                    "--model", w, "--mode", "closed", "--connections", 1, "--warmup",
                    args.warmup, "--duration", args.duration, "--drain", args.drain],
                timeout=args.warmup + args.duration + args.drain + 120)
            m = slo_metrics(row, lat, SLO_MS * 1000, args.duration)
            m.update(system=system, workload=w, kind="c1", loadavg_1m=loadavg(), offered_rps=0)
            rows.append(m)
            print(f"bench_peers: {system:<9} {w:<4} 1 closed-loop client: "
                  f"{m['throughput_rps']:>7,.0f} req/s  p50 {fmt_us(m['p50_us']):>9}  p99 "
                  f"{fmt_us(m['p99_us']):>9}  errors {m['errors']} {m['error_kinds']}", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"bench_peers: {system} {w} closed c=1: {e}", flush=True)
        for rate in args.rates:
            run(rate, "fixed")
        # Double until a rate misses the SLO for more than 1 % of its requests, then bisect
        # --bisect times between the last rate that met it and the first that did not.
        rate, good, bad = args.sweep_start, 0, None
        while rate <= args.sweep_max:
            m = run(rate, "sweep")
            if m is None or m["attainment"] < 0.99:
                bad = rate
                break
            good = rate
            rate *= 2
        for _ in range(args.bisect if bad is not None and good else 0):
            rate = (good + bad) // 2
            m = run(rate, "sweep")
            if m is None or m["attainment"] < 0.99:
                bad = rate
            else:
                good = rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("FERRY_BUILD_DIR", "build"),
                   help="folder holding node-agent/ferry-agent and perf/loadgen/ferry-loadgen")
    p.add_argument("--peers-dir", default=None,
                   help="virtualenvs of the peers (default BUILD_DIR/peers)")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--rates", default="100,400", help="fixed open-loop rates, req/s (100,400)")
    p.add_argument("--sweep-start", type=int, default=200)
    p.add_argument("--sweep-max", type=int, default=64000)
    p.add_argument("--bisect", type=int, default=2,
                   help="bisection steps after the doubling sweep first misses the SLO (2)")
    p.add_argument("--duration", type=float, default=3)
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--drain", type=float, default=2)
    p.add_argument("--ready-timeout", type=float, default=240)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--loadgen-cpus", default="1")
    p.add_argument("--no-pin", action="store_true")
    add_priority_args(p)
    p.add_argument("--out", default=str(REPO_ROOT / "perf" / "results"))
    args = p.parse_args()
    apply_priority(args)
    args.rates = [int(r) for r in args.rates.split(",") if r]

    build = pathlib.Path(args.build_dir)
    if not build.is_absolute():
        build = REPO_ROOT / build
    peers_dir = pathlib.Path(args.peers_dir) if args.peers_dir else build / "peers"
    if not peers_dir.is_absolute():
        peers_dir = REPO_ROOT / peers_dir
    agent_bin = build / "node-agent" / "ferry-agent"
    loadgen = build / "perf" / "loadgen" / "ferry-loadgen"
    for b in (agent_bin, loadgen):
        if not b.exists():
            sys.exit(f"bench_peers: {b} not found; build it first")
    model = REPO_ROOT / "examples" / "models" / "mlp.safetensors"
    if not model.exists():
        sys.exit(f"bench_peers: {model} not found; run examples/make_examples.py first")
    pin = not args.no_pin and shutil.which("taskset") is not None
    if not pin:
        args.server_cpus = args.loadgen_cpus = None
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

    rows, failures = [], {}
    systems = args.systems.split(",")
    with tempfile.TemporaryDirectory(prefix="ferry-bench-peers-") as tmp:
        tmp = pathlib.Path(tmp)
        for system in systems:
            print(f"bench_peers: --- {system} (load average {loadavg():.2f})", flush=True)
            if system == "ferry":
                manifests = tmp / "manifests"
                manifests.mkdir()
                (manifests / "echo.yaml").write_text(ECHO_YAML)
                (manifests / "mlp.yaml").write_text(MLP_YAML.format(uri=model.as_uri()))
                shutil.copy(REPO_ROOT / "examples" / "mlp.slo.yaml", manifests / "mlp.slo.yaml")
                agent = start_agent(agent_bin, manifests, tmp / "agent.log", 0, args.server_cpus)
                try:
                    measure(args, loadgen, system, agent.http_port, False, rows)
                finally:
                    agent.terminate()
                continue
            venv = peers_dir / system
            if not (venv / "bin" / "python").exists():
                failures[system] = (f"not installed ({venv} missing): run perf/peers/install.sh; "
                                    f"{log_tail(peers_dir / f'{system}.install.log', 5)}")
                print(f"bench_peers: {system}: {failures[system]}", flush=True)
                continue
            log = tmp / f"{system}.log"
            server = PeerServer(system, venv, args.server_cpus, log, model)
            try:
                t0 = time.monotonic()
                server.wait_ready(args.ready_timeout)
                print(f"bench_peers: {system} ready after {time.monotonic() - t0:.0f} s",
                      flush=True)
                measure(args, loadgen, system, server.port, server.batch_dim, rows)
            except RuntimeError as e:
                failures[system] = f"{e}; last lines of its log:\n{log_tail(log)}"
                print(f"bench_peers: {system} FAILED: {failures[system]}", flush=True)
            finally:
                server.stop()
                shutil.copy(log, out_dir / f"peers_{system}.log")

    fields = ["system", "workload", "kind", "offered_rps", "throughput_rps", "goodput_rps",
              "attainment", "p50_us", "p99_us", "p999_us", "errors", "error_kinds", "late",
              "loadavg_1m"]
    write_csv(out_dir / "peers.csv", rows, fields)

    # Summary: p50/p99 at the fixed rates, max goodput over the sweep, ratios to ferry.
    summary = []
    for w in WORKLOADS:
        base = {}
        for system in systems:
            mine = [r for r in rows if r["system"] == system and r["workload"] == w]
            if not mine:
                continue
            open_runs = [r for r in mine if r["kind"] != "c1"] or [{"goodput_rps": 0.0}]
            s = {"system": system, "workload": w,
                 "max_goodput_rps": max(r["goodput_rps"] for r in open_runs)}
            c1 = [r for r in mine if r["kind"] == "c1"]
            if c1:
                s["c1_p50_us"] = c1[0]["p50_us"]
                s["c1_rps"] = c1[0]["throughput_rps"]
            for rate in args.rates:
                fixed = [r for r in mine if r["kind"] == "fixed" and r["offered_rps"] == rate]
                if fixed:
                    s[f"p50_us@{rate}"] = fixed[0]["p50_us"]
                    s[f"p99_us@{rate}"] = fixed[0]["p99_us"]
                    s[f"within@{rate}"] = fixed[0]["attainment"]
            if system == "ferry":
                base = s
            summary.append(s)
        for s in summary:
            if s["workload"] != w or not base:
                continue
            s["goodput_vs_ferry"] = s["max_goodput_rps"] / base["max_goodput_rps"]
            if "c1_p50_us" in s and "c1_p50_us" in base:
                s["c1_p50_vs_ferry"] = s["c1_p50_us"] / base["c1_p50_us"]
            for rate in args.rates:
                if f"p50_us@{rate}" in s and f"p50_us@{rate}" in base:
                    s[f"p50_vs_ferry@{rate}"] = s[f"p50_us@{rate}"] / base[f"p50_us@{rate}"]
                    s[f"p99_vs_ferry@{rate}"] = s[f"p99_us@{rate}"] / base[f"p99_us@{rate}"]
    sfields = ["system", "workload", "max_goodput_rps", "goodput_vs_ferry", "c1_rps", "c1_p50_us",
               "c1_p50_vs_ferry"]
    for rate in args.rates:
        sfields += [f"p50_us@{rate}", f"p99_us@{rate}", f"within@{rate}", f"p50_vs_ferry@{rate}",
                    f"p99_vs_ferry@{rate}"]
    write_csv(out_dir / "peers_summary.csv", summary, sfields)

    print(f"\n{'system':<9} {'fn':<4} {'max goodput':>11} {'vs ferry':>8} {'c=1 p50':>10}", end="")
    for rate in args.rates:
        print(f" {'p50@' + str(rate):>10} {'p99@' + str(rate):>10}", end="")
    print()
    for s in summary:
        print(f"{s['system']:<9} {s['workload']:<4} {s['max_goodput_rps']:>11,.0f} "
              f"{s.get('goodput_vs_ferry', float('nan')):>8.3f} "
              f"{fmt_us(s.get('c1_p50_us', float('nan'))):>10}", end="")
        for rate in args.rates:
            print(f" {fmt_us(s.get(f'p50_us@{rate}', float('nan'))):>10} "
                  f"{fmt_us(s.get(f'p99_us@{rate}', float('nan'))):>10}", end="")
        print()
    for system, why in failures.items():
        print(f"\nbench_peers: {system} not measured: {why}")
    loads = [r["loadavg_1m"] for r in rows]
    if loads:
        print(f"\nbench_peers: load average (1 min) during the runs: {min(loads):.2f} to "
              f"{max(loads):.2f} (median {statistics.median(loads):.2f})")
    print(f"bench_peers: wrote {out_dir / 'peers.csv'}, {out_dir / 'peers_summary.csv'}")


if __name__ == "__main__":
    main()
