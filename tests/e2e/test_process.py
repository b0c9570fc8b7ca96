"""The agent as a process: refusing bad manifests, and draining on SIGTERM."""

import pathlib
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from agentproc import AgentProcess, agent_binary
from e2e_util import metric_sum, parse_metrics

MANIFEST_DIR = pathlib.Path(__file__).resolve().parent / "manifests"


def run_agent_expecting_failure(manifests, timeout_s=30, extra_args=()):
    binary = agent_binary()
    if not binary.exists():
        pytest.fail(f"{binary} not found", pytrace=False)
    try:
        proc = subprocess.run(
            [str(binary), "--manifests", str(manifests), "--host", "127.0.0.1",
             "--http-port", "0", "--grpc-port", "0", *extra_args],
            capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"agent kept running with a bad manifest; output:\n"
                    f"{(e.stderr or b'').decode(errors='replace')}", pytrace=False)
    return proc.returncode, proc.stderr.decode(errors="replace")


def wait_for(predicate, what, agent, timeout_s=20.0):
    """Polls `predicate` until it holds; fails with the agent's log past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if agent.proc.poll() is not None and not predicate():
            pytest.fail(f"agent exited ({agent.proc.returncode}) before: {what}\n{agent.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}\n{agent.log()}")
        time.sleep(0.01)


def pending_requests(agent, model):
    """The agent's ferry_inference_pending_request_count gauge for `model`."""
    r = requests.get(f"{agent.http_url}/metrics", timeout=5)
    return metric_sum(parse_metrics(r.text), "ferry_inference_pending_request_count", model=model)


def test_bad_manifest_refused(tmp_path):
    bad = tmp_path / "max_batch_size.yaml"
    shutil.copy(MANIFEST_DIR / "bad" / "max_batch_size.yaml", bad)
    code, err = run_agent_expecting_failure(bad)
    assert code != 0, err
    assert "max_batch_size.yaml" in err, err
    assert "spec.batching.maxBatchSize" in err, err
    assert "-3" in err, err
    assert "ferry-agent: ready" not in err


def test_bad_manifest_in_folder_refuses_everything(tmp_path):
    # All or nothing: one bad file among good ones stops the agent from serving any.
    shutil.copy(MANIFEST_DIR / "echo.yaml", tmp_path / "a_echo.yaml")
    shutil.copy(MANIFEST_DIR / "bad" / "max_batch_size.yaml", tmp_path / "b_bad.yaml")
    code, err = run_agent_expecting_failure(tmp_path)
    assert code != 0, err
    assert "b_bad.yaml" in err, err
    assert "spec.batching.maxBatchSize" in err, err


def test_bad_runtime_config_refused(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: wf}
spec:
  runtime: wordfilter
  config: {blacklist: 5}
""")
    # spec.config is checked when the runtime loads: by default a function whose runtime fails to
    # load is served as not ready (test_load_errors.py); --exit-on-load-error refuses to start.
    code, err = run_agent_expecting_failure(path, extra_args=("--exit-on-load-error",))
    assert code != 0, err
    assert "wf.yaml" in err, err
    assert "spec.config.blacklist" in err, err


def test_graceful_shutdown_finishes_accepted_request(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "drain.yaml").write_text("""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: drain}
spec:
  runtime: echo
  config: {delayMicros: 1000000}
  batching: {maxBatchSize: 1, maxQueueDelayMicros: 0}
""")
    agent = AgentProcess(manifests, tmp_path / "agent.log").start()
    try:
        agent.wait_ready(timeout_s=30.0)
        result = {}

        def slow_request():
            body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                                "data": ["in flight"]}]}
            try:
                result["response"] = requests.post(f"{agent.http_url}/v2/models/drain/infer",
                                                   json=body, timeout=30)
            except requests.RequestException as e:
                result["error"] = e

        thread = threading.Thread(target=slow_request)
        started = time.monotonic()
        thread.start()
        # The request is accepted (it needs 1 s of compute) before the agent is told to stop.
        wait_for(lambda: pending_requests(agent, "drain") == 1, "request accepted", agent)
        agent.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "received SIGTERM" in agent.log(), "SIGTERM logged", agent)

        # New work is no longer accepted while the old finishes: readiness goes away (or the
        # listener closes) while the in-flight request is still running.
        def not_ready():
            try:
                return requests.get(f"{agent.http_url}/v2/health/ready",
                                    timeout=5).status_code != 200
            except requests.ConnectionError:
                return True

        wait_for(not_ready, "readiness gone after SIGTERM", agent)
        assert thread.is_alive(), "the in-flight request finished before readiness went away"

        thread.join(timeout=30)
        assert not thread.is_alive(), "in-flight request never answered"
        assert "error" not in result, f"in-flight request failed: {result.get('error')}\n" \
            f"{agent.log()}"
        response = result["response"]
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == ["in flight"]
        assert time.monotonic() - started >= 0.9  # it really ran to completion
        code = agent.proc.wait(timeout=15)
        assert code == 0, agent.log()
    finally:
        agent.terminate(timeout_s=5.0)
