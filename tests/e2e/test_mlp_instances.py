"""Concurrent executors: `mlp` with batching.instances > 1 runs several batches at once, each on
its own executor thread with its own scratch buffers. Many concurrent requests of different
sizes must get exactly what the same model gives with one executor, row for row."""

import concurrent.futures
import threading

import numpy as np
import pytest
import requests

from agentproc import AgentProcess
from conftest import write_mlp
from e2e_util import metric_sum, parse_metrics

CLIENTS = 12
REQUESTS_PER_CLIENT = 20


def manifest(name, instances):
    # A short delay so that concurrent requests share batches of different sizes.
    return f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: mlp
  model: {{uri: "file://mlp.safetensors"}}
  config: {{activations: [relu, none]}}
  batching: {{maxBatchSize: 16, maxQueueDelayMicros: 2000, policy: fixed, instances: {instances}}}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlp-instances")
    folder = tmp / "manifests"
    folder.mkdir()
    write_mlp(folder)
    (folder / "mlp.yaml").unlink()
    (folder / "mlp-one.yaml").write_text(manifest("mlp-one", 1))
    (folder / "mlp-four.yaml").write_text(manifest("mlp-four", 4))
    proc = AgentProcess(folder, tmp / "agent.log").start()
    try:
        proc.wait_ready(timeout_s=30.0)
    except RuntimeError as e:
        proc.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    yield proc
    assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def infer(agent, model, x):
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.flatten().tolist()}]}
    r = requests.post(f"{agent.http_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [x.shape[0], 8]
    return np.array(out["data"], dtype=np.float32).reshape(x.shape[0], 8)


def test_concurrent_executors_match_single_executor(agent):
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((int(rng.integers(1, 6)), 16)).astype(np.float32)
              for _ in range(CLIENTS * REQUESTS_PER_CLIENT)]
    # One executor, one request at a time: the reference answer of each input.
    want = [infer(agent, "mlp-one", x) for x in inputs]

    barrier = threading.Barrier(CLIENTS)

    def client(c):
        barrier.wait(timeout=10)
        mine = range(c, len(inputs), CLIENTS)
        return [(i, infer(agent, "mlp-four", inputs[i])) for i in mine]

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = [item for part in pool.map(client, range(CLIENTS)) for item in part]
    assert len(results) == len(inputs)
    for i, got in results:
        # A row's result does not depend on the batch it shared or the thread that ran it
        # (beyond float summation order within a BLAS call).
        np.testing.assert_allclose(got, want[i], rtol=1e-5, atol=1e-6, err_msg=f"request {i}")

    samples = parse_metrics(requests.get(f"{agent.http_url}/metrics", timeout=10).text)
    batches = metric_sum(samples, "ferry_inference_exec_count", model="mlp-four")
    # Concurrent requests really were batched together.
    assert 0 < batches < len(inputs), batches
