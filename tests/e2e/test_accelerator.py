"""Where a function runs on a node without a GPU: `accelerator: any` falls back to the CPU and
serves, `accelerator: gpu` is refused with a clear error (docs/manifest.md). The agent is
started with CUDA_VISIBLE_DEVICES empty, so it sees no GPU even on a machine that has one."""

import subprocess

import numpy as np
import pytest
import requests

from agentproc import AgentProcess, agent_binary
from conftest import write_mlp


def mlp_manifest(name, accelerator):
    return f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: mlp
  model: {{uri: "file://mlp.safetensors"}}
  hardware: {{accelerator: {accelerator}}}
  config: {{activations: [relu, none]}}
  batching: {{maxBatchSize: 16, maxQueueDelayMicros: 0}}
"""


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
