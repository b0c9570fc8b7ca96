#!/usr/bin/env python3
"""GPU busy fraction through the agent under saturating load, with the CPU/GPU pipeline on
(batching.pipelineDepth 2) and off (depth 1), and rows/s against a CPU replica of the same MLP.

    pipeline_check.py AGENT_BINARY LOADGEN_BINARY OUT_DIR

For each model size (FERRY_PIPE_DIMS, ';'-separated lists of layer widths; default the MLP of
agent_gpu_check.py and a 4x wider one) one ferry-agent serves the model three times: on the GPU
with pipelineDepth 2 and 1, and on the CPU. ferry-loadgen (closed loop, HTTP binary tensors,
64 connections, 64-row requests) saturates each function in turn. The device busy fraction is the
agent's own ferry_device_busy_duration_us counter over the measured window (the time at least one
of the function's batches was between launch and completion), cross-checked with nvidia-smi's
utilization.gpu sampled every 100 ms over the same window. Per-stage means come from
ferry_pipeline_stage_duration_us. Writes OUT_DIR/pipeline.csv and prints a table; the goal is a
busy fraction >= 0.90 with the pipeline on.

Needs Python's standard library and numpy. FERRY_CHECK_ACCELERATOR=cpu dry-runs it without a GPU
(every function on the CPU; no busy fraction). Exit status 0 when every run completed without
errors (the goal is reported, not enforced), 1 otherwise.
"""
import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

DEFAULT_DIMS = "1024,4096,4096,1024;1024,16384,16384,1024"
ROWS_PER_REQUEST = int(os.environ.get("FERRY_PIPE_ROWS", "64"))
CONNECTIONS = int(os.environ.get("FERRY_PIPE_CONNECTIONS", "64"))
WARMUP_S = float(os.environ.get("FERRY_PIPE_WARMUP", "2"))
DURATION_S = float(os.environ.get("FERRY_PIPE_DURATION", "6"))
GOAL = 0.90


def write_model(path, dims, rng):
    """Random weights (uniform, scaled by 1/sqrt(fan-in) so activations stay O(1)), streamed to
    the file layer by layer: the widest model is over a gigabyte."""
    header, offset, shapes = {}, 0, []
    for i in range(len(dims) - 1):
        for name, shape in ((f"layers.{i}.weight", (dims[i + 1], dims[i])),
                            (f"layers.{i}.bias", (dims[i + 1],))):
            n = int(np.prod(shape)) * 4
            header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            shapes.append((shape, dims[i]))
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for shape, fan_in in shapes:
            a = rng.random(shape, dtype=np.float32)
            a -= 0.5
            a *= 2.0 / np.sqrt(fan_in)
            a.astype("<f4", copy=False).tofile(f)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def series(text, name, model, **labels):
    """Sum of the samples of `name` for `model` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        m = re.match(r'^[^{]+\{([^}]*)\} ([^ ]+)', line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if got.get("model", got.get("function")) != model:
            continue
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


class SmiSampler:
    """nvidia-smi utilization.gpu every 100 ms between start() and stop()."""

    def __init__(self):
        self.values, self.proc, self.thread = [], None, None

    def start(self):
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.values.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def stop(self):
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait(timeout=5)
        return sum(self.values) / len(self.values) / 100.0 if self.values else None


def run_load(loadgen, port, model, features, label, csv_path):
    """Closed-loop load for WARMUP_S + DURATION_S; returns the loadgen CSV row and the metrics
    scraped around the measured window (plus nvidia-smi's mean over it)."""
    cmd = [loadgen, "--port", str(port), "--protocol", "binary", "--workload", "mlp",
           "--model", model, "--rows", str(ROWS_PER_REQUEST), "--features", str(features),
           "--mode", "closed", "--connections", str(CONNECTIONS), "--threads", "8",
           "--warmup", str(WARMUP_S), "--duration", str(DURATION_S), "--drain", "5",
           "--label", label, "--csv", csv_path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    # The measured window starts after the warm-up; leave a margin at both ends.
    time.sleep(WARMUP_S + 0.5)
    before, t_before = scrape(port), time.time()
    smi = SmiSampler()
    if not model.endswith("-cpu"):
        smi.start()
    time.sleep(max(0.5, DURATION_S - 1.0))
    after, t_after = scrape(port), time.time()
    util = smi.stop()
    out, _ = proc.communicate(timeout=DURATION_S + 60)
    print(out.strip())
    rows = list(csv.DictReader(open(csv_path)))
    row = [r for r in rows if r["label"] == label][-1]
    return row, before, after, (t_after - t_before) * 1e6, util, time.time() - t0


def main():
    agent, loadgen, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    accel = os.environ.get("FERRY_CHECK_ACCELERATOR", "gpu")
    rng = np.random.default_rng(11)
    results, ok = [], True
    for dims_text in os.environ.get("FERRY_PIPE_DIMS", DEFAULT_DIMS).split(";"):
        dims = [int(d) for d in dims_text.split(",")]
        work = tempfile.mkdtemp(prefix="ferry-pipe-")
        t = time.time()
        write_model(os.path.join(work, "mlp.safetensors"), dims, rng)
        print(f"\n== model {dims} ({sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1)) / 1e6:.0f}"
              f"M weights) written in {time.time() - t:.1f} s")
        functions = [("pipe-d2", accel, 2), ("pipe-d1", accel, 1), ("pipe-cpu", "cpu", 1)]
        # The weights plus, per slot, the 32 MiB GEMM workspace and the batch buffers.
        weights_mib = 4 * sum(dims[i] * dims[i + 1] + dims[i + 1]
                              for i in range(len(dims) - 1)) / 2**20
        gpu_mib = int(weights_mib) + 256
        docs = []
        for name, acc, depth in functions:
            hw = (f"{{accelerator: gpu, gpuMemoryMiB: {gpu_mib}}}" if acc == "gpu"
                  else "{accelerator: cpu}")
            docs.append(f"""apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: mlp
  model: {{uri: "file://mlp.safetensors"}}
  hardware: {hw}
  batching: {{maxBatchSize: 256, maxQueueDelayMicros: 500, policy: aimd, maxQueueSize: 4096,
              pipelineDepth: {depth}}}
""")
        with open(os.path.join(work, "mlp.yaml"), "w") as f:
            f.write("---\n".join(docs))
        log_path = os.path.join(out_dir, f"pipeline_agent_{dims[1]}.log")
        log = open(log_path, "w+")
        proc = subprocess.Popen([agent, "--manifests", work, "--http-port", "0",
                                 "--grpc-port", "-1"], stdout=log, stderr=subprocess.STDOUT)
        port, deadline = None, time.time() + 180
        while time.time() < deadline and port is None and proc.poll() is None:
            time.sleep(0.2)
            log.seek(0)
            text = log.read()
            m = re.search(r"listening http=[\d.]+:(\d+)", text)
            if m and "ready" in text:
                port = int(m.group(1))
        if port is None:
            log.seek(0)
            print(log.read()[-4000:])
            print("agent did not start")
            proc.kill()
            return 1
        csv_path = os.path.join(out_dir, f"pipeline_loadgen_{dims[1]}.csv")
        for name, acc, depth in functions:
            label = f"{name}-{dims[1]}"
            row, before, after, window_us, util, took = run_load(
                loadgen, port, name, dims[0], label, csv_path)
            busy_us = (series(after, "ferry_device_busy_duration_us", name)
                       - series(before, "ferry_device_busy_duration_us", name))
            stage_means = {}
            for stage in ("queue", "pack", "h2d", "compute", "d2h", "scatter"):
                s = (series(after, "ferry_pipeline_stage_duration_us_sum", name, stage=stage)
                     - series(before, "ferry_pipeline_stage_duration_us_sum", name, stage=stage))
                c = (series(after, "ferry_pipeline_stage_duration_us_count", name, stage=stage)
                     - series(before, "ferry_pipeline_stage_duration_us_count", name, stage=stage))
                stage_means[stage] = round(s / c, 1) if c > 0 else ""
            batches = (series(after, "ferry_inference_exec_count", name)
                       - series(before, "ferry_inference_exec_count", name))
            rows_done = (series(after, "ferry_inference_count", name)
                         - series(before, "ferry_inference_count", name))
            gpu_s = (series(after, "ferry_function_gpu_seconds_total", name)
                     - series(before, "ferry_function_gpu_seconds_total", name))
            errors = int(row.get("errors") or 0)
            ok = ok and errors == 0 and int(row.get("ok") or 0) > 0
            on_gpu = acc == "gpu"
            results.append({
                "dims": "x".join(map(str, dims)), "function": name,
                "accelerator": acc, "pipeline_depth": depth if on_gpu else "",
                "rows_per_s": round(float(row["throughput_rps"]) * ROWS_PER_REQUEST, 1),
                "p50_us": row["p50_us"], "p99_us": row["p99_us"], "errors": errors,
                "mean_batch_rows": round(rows_done / batches, 1) if batches else "",
                "busy_fraction": round(busy_us / window_us, 3) if on_gpu else "",
                "nvidia_smi_util": round(util, 3) if (on_gpu and util is not None) else "",
                "gpu_seconds": round(gpu_s, 3) if on_gpu else "",
                **{f"{k}_us": v for k, v in stage_means.items()},
                "seconds": round(took, 1),
            })
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        ok = ok and rc == 0
        print(f"agent exit status after SIGTERM: {rc}")

    keys = list(results[0].keys())
    with open(os.path.join(out_dir, "pipeline.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(results)
    cols = ["dims", "function", "pipeline_depth", "rows_per_s", "p50_us", "busy_fraction",
            "nvidia_smi_util", "mean_batch_rows", "pack_us", "h2d_us", "compute_us", "d2h_us",
            "scatter_us"]
    print("\n" + " ".join(f"{c:>16}" for c in cols))
    for r in results:
        print(" ".join(f"{str(r[c]):>16}" for c in cols))
    for r in results:
        if r["function"] == "pipe-d2" and r["busy_fraction"] != "":
            met = r["busy_fraction"] >= GOAL
            print(f"{r['dims']}: busy fraction with the pipeline {r['busy_fraction']} "
                  f"(goal {GOAL}: {'met' if met else 'NOT met'})")
    print(f"all runs completed without errors: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
