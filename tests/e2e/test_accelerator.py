"""Where a function runs on a node without a GPU: `accelerator: any` falls back to the CPU and
serves, `accelerator: gpu` is refused with a clear error (docs/manifest.md). The agent is
started with CUDA_VISIBLE_DEVICES empty, so it sees no GPU even on a machine that has one.
Where a GPU is, the mlp runtime runs at each config.precision (docs/gpu.md); those tests skip
without a GPU, or fail under FERRY_REQUIRE_GPU=1."""

import os
import subprocess

import numpy as np
import pytest
import requests

from agentproc import AgentProcess, agent_binary
from conftest import write_mlp


def mlp_manifest(name, accelerator, precision=None):
    extra = f", precision: {precision}" if precision else ""
    return f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: mlp
  model: {{uri: "file://mlp.safetensors"}}
  hardware: {{accelerator: {accelerator}}}
  config: {{activations: [relu, none]{extra}}}
  batching: {{maxBatchSize: 16, maxQueueDelayMicros: 0}}
"""


def skip_without_gpu(reason):
    """Skips, or fails under FERRY_REQUIRE_GPU=1 (perf/device/run.sh sets it where nvidia-smi
    works), so a GPU machine whose driver or build cannot use its GPU is not a green run."""
    if os.environ.get("FERRY_REQUIRE_GPU") == "1":
        pytest.fail(f"FERRY_REQUIRE_GPU=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def infer(agent, name, x):
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.flatten().tolist()}]}
    r = requests.post(f"{agent.http_url}/v2/models/{name}/infer", json=body, timeout=20)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float64).reshape(out["shape"])


def reference(weights, x):
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w.astype(np.float64).T + b.astype(np.float64)
        if i + 1 < len(weights):
            h = np.maximum(h, 0.0)
    return h


@pytest.fixture
def no_gpu(monkeypatch):
    # The agent inherits the environment at start.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_any_falls_back_to_cpu_without_gpu(tmp_path, no_gpu):
    weights = write_mlp(tmp_path)
    (tmp_path / "mlp.yaml").unlink()
    (tmp_path / "mlp-any.yaml").write_text(mlp_manifest("mlp-any", "any"))
    agent = AgentProcess(tmp_path / "mlp-any.yaml", tmp_path / "agent.log").start()
    try:
        agent.wait_ready(timeout_s=30.0)
        assert "serving on CPU only" in agent.log(), agent.log()
        # The agent says where the function runs and why it is not on a GPU.
        assert "function 'mlp-any': accelerator: any runs on the CPU" in agent.log(), agent.log()
        # No GPU, so nothing can poison a CUDA context: live, and the counter says 0.
        assert requests.get(f"{agent.http_url}/v2/health/live", timeout=10).status_code == 200
        metrics = requests.get(f"{agent.http_url}/metrics", timeout=10).text
        assert "ferry_gpu_context_errors_total 0" in metrics, metrics
        assert requests.get(f"{agent.http_url}/v2/models/mlp-any/ready",
                            timeout=10).status_code == 200
        x = np.linspace(-1.0, 1.0, 3 * 16, dtype=np.float32).reshape(3, 16)
        body = {"inputs": [{"name": "input", "shape": [3, 16], "datatype": "FP32",
                            "data": x.flatten().tolist()}]}
        r = requests.post(f"{agent.http_url}/v2/models/mlp-any/infer", json=body, timeout=20)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [3, 8]
        np.testing.assert_allclose(np.array(out["data"]).reshape(3, 8), reference(weights, x),
                                   rtol=1e-4, atol=1e-5)
    finally:
        assert agent.terminate(timeout_s=15.0) == 0, agent.log()


def test_gpu_is_refused_without_gpu(tmp_path, no_gpu):
    write_mlp(tmp_path)
    (tmp_path / "mlp.yaml").unlink()
    (tmp_path / "mlp-gpu.yaml").write_text(mlp_manifest("mlp-gpu", "gpu"))
    proc = subprocess.run(
        [str(agent_binary()), "--manifests", str(tmp_path / "mlp-gpu.yaml"), "--host",
         "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--exit-on-load-error"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, err
    assert "mlp-gpu" in err, err
    assert "spec.hardware.accelerator is gpu but this node has no GPU" in err, err
    assert "ferry-agent: ready" not in err


def test_unknown_precision_is_refused(tmp_path):
    write_mlp(tmp_path)
    (tmp_path / "mlp.yaml").unlink()
    (tmp_path / "mlp-fp8.yaml").write_text(mlp_manifest("mlp-fp8", "any", precision="fp8"))
    proc = subprocess.run(
        [str(agent_binary()), "--manifests", str(tmp_path / "mlp-fp8.yaml"), "--host",
         "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--exit-on-load-error"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, err
    assert ("spec.config.precision: unknown precision 'fp8'; expected fp32, tf32, bf16 or fp16"
            in err), err


# Relative error of one rounding of a GEMM input (cuda/linear.h): fp16 and bf16 round to nearest
# (11 and 8 significant bits); tf32 inputs may be truncated to 11 bits.
UNIT_ERROR = {"fp32": 2.0**-24, "tf32": 2.0**-10, "fp16": 2.0**-11, "bf16": 2.0**-9}


def error_bound(weights, x, precision):
    """A rigorous bound on each output's error at `precision` (PrecisionTolerance of
    cuda/linear.h, carried through |W| from layer to layer; relu is 1-Lipschitz)."""
    u = UNIT_ERROR[precision]
    h = x.astype(np.float64)
    e = np.zeros_like(h)
    for i, (w, b) in enumerate(weights):
        w = w.astype(np.float64)
        k = w.shape[1]
        rtol = 2 * u + u * u + (k + 2) * 2.0**-24
        magnitude = np.abs(h) @ np.abs(w).T + np.abs(b)
        e = (1e-6 + rtol * magnitude + e @ np.abs(w).T) * (1 + rtol)
        h = h @ w.T + b
        if i + 1 < len(weights):
            h = np.maximum(h, 0.0)
    return e


def test_mlp_runs_at_each_precision_on_a_gpu(tmp_path):
    weights = write_mlp(tmp_path)
    (tmp_path / "mlp.yaml").unlink()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for precision in UNIT_ERROR:
        (manifests / f"mlp-{precision}.yaml").write_text(
            mlp_manifest(f"mlp-{precision}", "gpu", precision).replace(
                "file://mlp.safetensors", (tmp_path / "mlp.safetensors").resolve().as_uri()))
    agent = AgentProcess(manifests, tmp_path / "agent.log").start()
    try:
        try:
            agent.wait_ready(timeout_s=60.0)
        except Exception:  # noqa: BLE001 - the log says why
            if "serving on CPU only" in agent.log():
                skip_without_gpu("no GPU on this machine (the agent reports: serving on CPU only)")
            raise
        if "serving on CPU only" in agent.log():
            skip_without_gpu("no GPU on this machine (the agent reports: serving on CPU only)")
        x = np.linspace(-1.0, 1.0, 5 * 16, dtype=np.float32).reshape(5, 16)
        want = reference(weights, x)
        got = {}
        for precision in UNIT_ERROR:
            r = requests.get(f"{agent.http_url}/v2/models/mlp-{precision}/ready", timeout=10)
            assert r.status_code == 200, (precision, r.text, agent.log())
            got[precision] = infer(agent, f"mlp-{precision}", x)
            excess = np.abs(got[precision] - want) / error_bound(weights, x, precision)
            assert excess.max() <= 1.0, (precision, excess.max())
        # The half precisions really round (the setting reaches the GPU path).
        assert not np.array_equal(got["bf16"], got["fp32"])
    finally:
        assert agent.terminate(timeout_s=15.0) == 0, agent.log()
