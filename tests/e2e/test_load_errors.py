"""A function that fails to load is reported not ready; the agent serves the others.

Runs `ferry-agent --manifests examples/` as a user would on a machine without a GPU: gpu-scale
asks for `accelerator: gpu`, so it cannot load here, and without --plugin-dir text-normalize
cannot either. The agent still starts and serves echo; each failed function answers 503 /
UNAVAILABLE with its load error. `--exit-on-load-error` restores the strict behaviour.
"""

import json
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from agentproc import REPO_ROOT, AgentProcess, agent_binary

EXAMPLES = REPO_ROOT / "examples"
GPU_PREFIX = "function 'gpu-scale' failed to load: "
NO_GPU = "spec.hardware.accelerator is gpu but this node has no GPU"


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load_errors")
    proc = AgentProcess(EXAMPLES, tmp / "agent.log")
    proc.start()
    try:
        proc.wait_ready(timeout_s=60.0)
    except RuntimeError as e:
        proc.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    if "serving on CPU only" not in proc.log():
        proc.terminate(timeout_s=15.0)
        pytest.skip("this machine has a GPU: gpu-scale loads here")
    yield proc
    assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def test_agent_starts_and_logs_each_load_error_once(agent):
    log = agent.log()
    lines = [line for line in log.splitlines() if GPU_PREFIX in line]
    assert len(lines) == 1, log
    assert lines[0].startswith("ferry-agent: error: ") and NO_GPU in lines[0], lines[0]
    assert "gpu-scale.yaml" in lines[0], lines[0]
    assert "function 'text-normalize' failed to load: " in log and "--plugin-dir" in log, log
    assert "loaded function 'echo'" in log, log


def test_server_stays_ready_and_others_serve(agent):
    assert request(f"{agent.http_url}/v2/health/ready")[0] == 200
    assert request(f"{agent.http_url}/v2/health/live")[0] == 200
    status, body = request(f"{agent.http_url}/v2")
    assert status == 200 and json.loads(body)["name"] == "ferry", body
    assert request(f"{agent.http_url}/v2/models/echo/ready")[0] == 200
    status, body = request(f"{agent.http_url}/v2/models/echo/infer", {
        "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == ["hi"], body
    client = grpcclient.InferenceServerClient(agent.grpc_hostport)
    try:
        assert client.is_server_ready()
    finally:
        client.close()


@pytest.mark.parametrize("path,body", [
    ("/v2/models/gpu-scale/ready", None),
    ("/v2/models/gpu-scale/versions/1/ready", None),
    ("/v2/models/gpu-scale", None),
    ("/v2/models/gpu-scale/infer",
     {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}),
    ("/gpu-scale/predict", {"input": [1.0]}),
])
def test_failed_function_answers_503_with_its_load_error(agent, path, body):
    status, raw = request(agent.http_url + path, body)
    assert status == 503, raw
    error = json.loads(raw)["error"]
    assert error.startswith(GPU_PREFIX) and NO_GPU in error, error


def test_failed_function_over_grpc(agent):
    client = grpcclient.InferenceServerClient(agent.grpc_hostport)
    try:
        assert client.is_model_ready("gpu-scale") is False
        assert client.is_model_ready("echo") is True
        inp = grpcclient.InferInput("x", [1, 1], "FP32")
        inp.set_data_from_numpy(np.ones((1, 1), np.float32))
        with pytest.raises(InferenceServerException) as e:
            client.infer("gpu-scale", [inp])
        assert "UNAVAILABLE" in str(e.value.status()), e.value
        assert GPU_PREFIX in e.value.message() and NO_GPU in e.value.message(), e.value
    finally:
        client.close()


def test_exit_on_load_error_refuses_to_start(tmp_path, agent):
    proc = subprocess.run(
        [str(agent_binary()), "--manifests", str(EXAMPLES), "--exit-on-load-error", "--host",
         "127.0.0.1", "--http-port", "0", "--grpc-port", "0"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert "ferry-agent: ready" not in err, err
    assert "failed to load" not in err and ("--plugin-dir" in err or NO_GPU in err), err
