#!/usr/bin/env python3
"""Serves one MLP on the GPU and the same MLP on the CPU from one ferry-agent, checks that both
answer the same as a numpy reference over the KServe v2 binary tensor extension, and times them.

    agent_gpu_check.py AGENT_BINARY OUT_DIR

Needs only Python's standard library and numpy (no ferry client packages), so it runs on a bare
GPU machine. Prints a table and writes OUT_DIR/agent_gpu.csv.

First it starts an agent that serves only a CPU function and checks with nvidia-smi that the
agent holds no CUDA context (GPU discovery must not create one: each costs ~500 MiB of HBM);
after the GPU run it checks that the agent is live and counted no poisoned-context error.
"""
import csv
import http.client
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

DIMS = [1024, 4096, 4096, 1024]


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def reference(layers, x):
    y = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        y = y @ w.T.astype(np.float64) + b
        if i < len(layers) - 1:
            y = np.maximum(y, 0)
    return y


def infer(conn, model, x):
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}
    h = json.dumps(header).encode()
    body = h + x.astype("<f4").tobytes()
    conn.request("POST", f"/v2/models/{model}/infer", body=body,
                 headers={"Inference-Header-Content-Length": str(len(h)),
                          "Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{model}: HTTP {resp.status}: {data[:300]!r}")
    hl = int(resp.getheader("Inference-Header-Content-Length"))
    meta = json.loads(data[:hl])
    shape = meta["outputs"][0]["shape"]
    return np.frombuffer(data[hl:], dtype="<f4").reshape(shape)


def compute_apps():
    """{pid: used MiB} of processes holding a CUDA context, or None without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    apps = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            apps[int(parts[0])] = int(parts[1]) if parts[1].isdigit() else -1
    return apps


def start_agent(agent, folder, log_path):
    """Starts an agent on `folder`; returns (process, http port) or (process, None)."""
    log = open(log_path, "w+")
    proc = subprocess.Popen([agent, "--manifests", folder, "--http-port", "0", "--grpc-port",
                             "-1"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        log.seek(0)
        text = log.read()
        m = re.search(r"listening http=[\d.]+:(\d+)", text)
        if m and "ready" in text:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
    return proc, None


def check_cpu_agent_has_no_context(agent, work, out_dir):
    """True when an agent serving only a CPU function holds no CUDA context (or no nvidia-smi)."""
    folder = os.path.join(work, "cpu-only")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "mlp.yaml"), "w") as f:
        f.write(f"""apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: mlp-cpu-only}}
spec:
  runtime: mlp
  model: {{uri: "file://{os.path.join(work, 'big.safetensors')}"}}
  hardware: {{accelerator: cpu}}
""")
    proc, port = start_agent(agent, folder, os.path.join(out_dir, "agent_cpu_only.log"))
    try:
        if port is None:
            print("cpu-only agent did not start (see agent_cpu_only.log)")
            return False
        time.sleep(1.0)
        apps = compute_apps()
        if apps is None:
            print("no-context check: skipped (nvidia-smi unavailable)")
            return True
        holds = proc.pid in apps
        verdict = (f"HOLDS a CUDA context ({apps[proc.pid]} MiB)" if holds
                   else "holds no CUDA context")
        print(f"no-context check: the CPU-only agent (pid {proc.pid}) {verdict}")
        return not holds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main():
    agent, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ferry-gpu-")
    rng = np.random.default_rng(7)
    layers, tensors = [], {}
    for i in range(len(DIMS) - 1):
        w = (rng.standard_normal((DIMS[i + 1], DIMS[i])) / np.sqrt(DIMS[i])).astype(np.float32)
        b = (rng.standard_normal(DIMS[i + 1]) * 0.1).astype(np.float32)
        layers.append((w, b))
        tensors[f"layers.{i}.weight"] = w
        tensors[f"layers.{i}.bias"] = b
    write_safetensors(os.path.join(work, "big.safetensors"), tensors)
    docs = []
    for name, acc in (("mlp-gpu", "gpu"), ("mlp-cpu", "cpu")):
        # FERRY_CHECK_ACCELERATOR=cpu dry-runs the script on a machine without a GPU.
        acc = os.environ.get("FERRY_CHECK_ACCELERATOR", acc) if acc == "gpu" else acc
        hw = "{accelerator: gpu, gpuMemoryMiB: 512}" if acc == "gpu" else "{accelerator: cpu}"
        docs.append(f"""apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: mlp
  model: {{uri: "file://big.safetensors"}}
  hardware: {hw}
  batching: {{maxBatchSize: 256, maxQueueDelayMicros: 0, policy: aimd, maxQueueSize: 4096}}
""")
    with open(os.path.join(work, "mlp.yaml"), "w") as f:
        f.write("---\n".join(docs))
    no_context = check_cpu_agent_has_no_context(agent, work, out_dir)
    log = open(os.path.join(out_dir, "agent_gpu.log"), "w+")
    proc = subprocess.Popen([agent, "--manifests", work, "--http-port", "0", "--grpc-port", "-1"],
                            stdout=log, stderr=subprocess.STDOUT)
    port = None
    deadline = time.time() + 120
    while time.time() < deadline and port is None:
        time.sleep(0.2)
        log.seek(0)
        text = log.read()
        m = re.search(r"listening http=[\d.]+:(\d+)", text)
        if m and "ready" in text:
            port = int(m.group(1))
        if proc.poll() is not None:
            break
    if port is None:
        log.seek(0)
        print(log.read())
        print("agent did not start")
        proc.kill()
        return 1
    log.seek(0)
    print("".join(l for l in log.read().splitlines(True) if "GPU" in l or "loaded" in l))

    rows_list = [1, 16, 64, 256]
    results = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ok = True
    for rows in rows_list:
        x = rng.standard_normal((rows, DIMS[0])).astype(np.float32)
        want = reference(layers, x)
        outs = {}
        for model in ("mlp-gpu", "mlp-cpu"):
            outs[model] = infer(conn, model, x)
            err = float(np.max(np.abs(outs[model] - want)))
            if err > 2e-3:
                ok = False
                print(f"MISMATCH {model} rows={rows}: max abs error {err}")
            for _ in range(3):
                infer(conn, model, x)
            times = []
            t_end = time.time() + 3.0
            while len(times) < 100 and time.time() < t_end:
                t0 = time.perf_counter()
                infer(conn, model, x)
                times.append((time.perf_counter() - t0) * 1e6)
            p50 = statistics.median(times)
            results.append({"model": model, "rows": rows, "requests": len(times),
                            "p50_us": round(p50, 1),
                            "rows_per_s": round(rows / (p50 / 1e6), 1), "max_abs_err": err})
    # Concurrent load on each: 16 client threads of 16 rows, to let the batcher batch.
    for model in ("mlp-gpu", "mlp-cpu"):
        count = [0]
        lock = threading.Lock()
        stop = time.time() + 4.0
        x = rng.standard_normal((16, DIMS[0])).astype(np.float32)

        def worker():
            c = http.client.HTTPConnection("127.0.0.1", port)
            n = 0
            while time.time() < stop:
                infer(c, model, x)
                n += 1
            with lock:
                count[0] += n

        threads = [threading.Thread(target=worker) for _ in range(16)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.time() - t0
        results.append({"model": model, "rows": "16 x 16 clients", "requests": count[0],
                        "p50_us": "", "rows_per_s": round(count[0] * 16 / el, 1),
                        "max_abs_err": ""})
    apps = compute_apps()
    if apps is not None:
        print(f"GPU memory held by the agent (context + weights + buffers): "
              f"{apps.get(proc.pid, 0)} MiB")
    conn.request("GET", "/v2/health/live")
    live = conn.getresponse()
    live.read()
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    healthy = live.status == 200 and "ferry_gpu_context_errors_total 0" in metrics
    print(f"health after the run: live HTTP {live.status}, "
          f"{'no' if healthy else 'SOME'} poisoned-context errors counted")
    ok = ok and healthy and no_context
    for line in metrics.splitlines():
        if line.startswith(("ferry_inference_exec_count", "ferry_inference_count",
                            "ferry_inference_target_batch_size")):
            print(line)
    print(f"\n{'model':10} {'rows':>16} {'requests':>9} {'p50 us':>10} {'rows/s':>12}")
    for r in results:
        print(f"{r['model']:10} {str(r['rows']):>16} {r['requests']:>9} {str(r['p50_us']):>10} "
              f"{r['rows_per_s']:>12}")
    with open(os.path.join(out_dir, "agent_gpu.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0].keys()))
        w.writeheader()
        w.writerows(results)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    print(f"agent exit status after SIGTERM: {rc}; outputs match reference: {ok}")
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
