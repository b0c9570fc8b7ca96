"""User functions (runtime: plugin) end to end: the example libraries built by the project's
CMake, served by a ferry-agent started with --plugin-dir, called over HTTP (JSON and binary
tensors) and gRPC with tritonclient; then `ferry up` with the example manifests, where a plugin
built for another ABI is reported failed with its reason while the other functions keep serving.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from agentproc import REPO_ROOT, AgentProcess
from controlproc import binary, build_dir, run_ferry, wait_for
from e2e_util import as_bytes

EXAMPLES = REPO_ROOT / "examples"
MODES = ("json", "binary", "grpc")
TEXTS = ["  Hello   WORLD ", "Ferry\tRocks\n", "", "already fine"]
NORMALIZED = [b"hello world", b"ferry rocks", b"", b"already fine"]

BROKEN = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: broken-abi}
spec:
  runtime: plugin
  hardware: {accelerator: cpu, cpuCores: 0.25, memoryMiB: 64}
  config: {library: libtest_abi_major.so}
"""


def plugin_dir():
    d = build_dir() / "plugins"
    if not (d / "libtext_normalize.so").exists():
        pytest.fail(f"{d}/libtext_normalize.so not found: build it (cmake --build BUILD --target "
                    "text_normalize) or set FERRY_BUILD_DIR", pytrace=False)
    return d


def gpu_present(agent_log):
    return "serving on CPU only" not in agent_log


def skip_without_gpu(reason):
    """Skips, or fails under FERRY_REQUIRE_GPU=1 (perf/device/run.sh sets it where nvidia-smi
    works), so a GPU machine whose driver or build cannot use its GPU is not a green run."""
    if os.environ.get("FERRY_REQUIRE_GPU") == "1":
        pytest.fail(f"FERRY_REQUIRE_GPU=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    manifests = tmp / "manifests"
    manifests.mkdir()
    for name in ("echo.yaml", "text-normalize.yaml"):
        shutil.copy(EXAMPLES / name, manifests / name)
    proc = AgentProcess(manifests, tmp / "agent.log",
                        extra_args=("--plugin-dir", str(plugin_dir())))
    proc.start()
    try:
        proc.wait_ready(timeout_s=30.0)
    except RuntimeError as e:
        proc.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    yield proc
    assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def post(url, body, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def normalize(mode, agent, texts):
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    if mode == "grpc":
        client = grpcclient.InferenceServerClient(agent.grpc_hostport)
        inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(array)
        result = client.infer("text-normalize", [inp],
                              outputs=[grpcclient.InferRequestedOutput("normalized")])
    else:
        binary_data = mode == "binary"
        client = httpclient.InferenceServerClient(agent.http_hostport)
        inp = httpclient.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(array, binary_data=binary_data)
        result = client.infer("text-normalize", [inp], outputs=[
            httpclient.InferRequestedOutput("normalized", binary_data=binary_data)])
    client.close()
    return [as_bytes(v) for v in result.as_numpy("normalized").reshape(-1)]


def test_metadata_is_the_plugins_declaration(agent):
    with urllib.request.urlopen(f"{agent.http_url}/v2/models/text-normalize", timeout=5) as r:
        md = json.loads(r.read())
    assert md["platform"] == "ferry_plugin"
    assert md["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert md["outputs"] == [{"name": "normalized", "datatype": "BYTES", "shape": [-1]}]
    assert "function plugins load from" in agent.log()


@pytest.mark.parametrize("mode", MODES)
def test_text_normalize_over_every_protocol(agent, mode):
    assert normalize(mode, agent, TEXTS) == NORMALIZED


def test_requests_are_checked_against_the_declaration(agent):
    status, body = post(f"{agent.http_url}/v2/models/text-normalize/infer", {
        "inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert status == 400 and "BYTES" in body["error"], body


def test_per_item_error_fails_only_that_request(agent):
    # maxBytes is 4096 in examples/text-normalize.yaml.
    status, body = post(f"{agent.http_url}/v2/models/text-normalize/infer", {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x" * 5000]}]})
    assert status == 400, body
    assert "longer than maxBytes (4096)" in body["error"], body
    assert normalize("json", agent, ["  Still   OK"]) == [b"still ok"]
    status, body = post(f"{agent.http_url}/v2/models/echo/infer", {
        "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    assert status == 200 and body["outputs"][0]["data"] == ["hi"]


def test_agent_without_plugin_dir_refuses_plugins(tmp_path):
    shutil.copy(EXAMPLES / "text-normalize.yaml", tmp_path / "text-normalize.yaml")
    # Strict mode, so the error ends the agent (by default it serves on, the function not ready).
    proc = AgentProcess(tmp_path / "text-normalize.yaml", tmp_path / "agent.log",
                        extra_args=("--exit-on-load-error",))
    proc.start()
    code = proc.proc.wait(timeout=30)
    proc.terminate()
    assert code != 0
    assert "spec.config.library" in proc.log() and "--plugin-dir" in proc.log(), proc.log()


def test_gpu_scale_runs_its_kernel_where_a_gpu_is(agent, tmp_path):
    lib = build_dir() / "plugins" / "libgpu_scale.so"
    if not lib.exists():
        skip_without_gpu("gpu-scale is not built: this build has no CUDA")
    if not gpu_present(agent.log()):
        skip_without_gpu("no GPU on this machine: gpu-scale runs only where a GPU is "
                         "(the agent reports: serving on CPU only)")
    shutil.copy(EXAMPLES / "gpu-scale.yaml", tmp_path / "gpu-scale.yaml")
    proc = AgentProcess(tmp_path / "gpu-scale.yaml", tmp_path / "gpu.log",
                        extra_args=("--plugin-dir", str(plugin_dir())))
    proc.start()
    try:
        proc.wait_ready(timeout_s=60.0)
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        for mode in MODES:
            if mode == "grpc":
                client = grpcclient.InferenceServerClient(proc.grpc_hostport)
                inp = grpcclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
            else:
                client = httpclient.InferenceServerClient(proc.http_hostport)
                inp = httpclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=mode == "binary")
            y = client.infer("gpu-scale", [inp]).as_numpy("y")
            client.close()
            np.testing.assert_allclose(y, 2.0 * x + 1.0)  # scale 2, offset 1 in the manifest
    finally:
        assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def test_ferry_up_serves_plugins_and_reports_a_broken_one(tmp_path):
    fns = tmp_path / "fns"
    fns.mkdir()
    for name in ("echo.yaml", "text-normalize.yaml", "gpu-scale.yaml"):
        shutil.copy(EXAMPLES / name, fns / name)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for lib in plugin_dir().glob("*.so"):
        shutil.copy(lib, plugins / lib.name)
    broken_lib = build_dir() / "kernels" / "test_plugins" / "libtest_abi_major.so"
    if not broken_lib.exists():
        pytest.fail(f"{broken_lib} not found: build kernels_plugin_runtime_test", pytrace=False)
    shutil.copy(broken_lib, plugins / broken_lib.name)
    (tmp_path / "broken.yaml").write_text(BROKEN)

    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen(
        [str(binary("sdk", "cli", "ferry")), "up", "-f", str(fns), "--state",
         str(tmp_path / "state"), "--control", "127.0.0.1:0", "--gateway", "http://127.0.0.1:0",
         "--plugin-dir", str(plugins), "--ready-timeout", "60"],
        stdout=log, stderr=subprocess.STDOUT)
    text = lambda: (tmp_path / "up.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_for(lambda: "ferry: up." in text() or proc.poll() is not None, 90, "ferry up")
        assert proc.poll() is None, text()
        m = re.search(r"Gateway \(KServe v2 HTTP \+ Clipper predict\): (\S+)\s+control: (\S+)",
                      text())
        gateway, control = m.group(1), m.group(2)

        status, body = post(f"{gateway}/v2/models/text-normalize/infer", {
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                        "data": ["  Hello   WORLD ", "Ferry\tRocks"]}]})
        assert status == 200, body
        assert body["outputs"][0]["data"] == ["hello world", "ferry rocks"]

        def functions():
            r = run_ferry(control, "get", "functions", "-o", "json")
            assert r.returncode == 0, r.stderr
            return {f["name"]: f for f in json.loads(r.stdout).get("functions", [])}

        state_log = (tmp_path / "state" / "agent.log").read_text(errors="replace")
        if not gpu_present(state_log):
            # Waits for a GPU node, with a reason a person can act on; the rest is up.
            gpu = functions()["gpu-scale"]
            assert gpu.get("ready_replicas", 0) == 0
            assert any("gpu" in r.lower() for r in gpu.get("pending_reasons", [])), gpu

        r = run_ferry(control, "apply", "-f", str(tmp_path / "broken.yaml"))
        assert r.returncode == 0, r.stderr

        def failed_replica():
            for rep in functions().get("broken-abi", {}).get("replicas", []):
                if rep.get("state") == "REPLICA_STATE_FAILED":
                    return rep
            return None

        rep = wait_for(failed_replica, 30, "broken-abi reported failed")
        assert "libtest_abi_major.so" in rep["message"] and "abi_major" in rep["message"], rep
        assert "built for function ABI 2.0; this agent speaks 1.0" in rep["message"], rep

        # Not ready anywhere on the data plane; the agent and its other functions are unaffected.
        try:
            code = urllib.request.urlopen(f"{gateway}/v2/models/broken-abi/ready", timeout=5).status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code != 200
        status, body = post(f"{gateway}/v2/models/echo/infer", {
            "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
        assert status == 200 and body["outputs"][0]["data"] == ["hi"], body
        status, body = post(f"{gateway}/v2/models/text-normalize/infer", {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [" A  B "]}]})
        assert status == 200 and body["outputs"][0]["data"] == ["a b"], body

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, text()
    finally:
        if proc.poll() is None:
            # Ctrl-C first: `ferry up` stops its children; SIGKILL would orphan them.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
