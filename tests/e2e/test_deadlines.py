"""Deadlines: a request whose timeout passes while it waits is answered 504 (gRPC
DEADLINE_EXCEEDED); one that the agent can tell at admission will miss its deadline is refused at
once, as an overload (429), or answered with the SLO's default output under
`onOverload: default-output`.

Each case has its own function, so that what one test teaches a function's execution-time model
(admission trusts it after a few batches) cannot change another test's path. Every function runs
one batch at a time: 1 s where a test queues a request behind a running one (time enough to do so
on a busy machine), 300 ms where it only teaches admission how long a batch takes."""

import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from agentproc import AgentProcess
from e2e_util import metric_sum, parse_metrics

OCCUPY_US = 1_000_000
TEACH_US = 300_000


def slow_echo(name, delay_us, extra_batching="", slo=""):
    return f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: echo
  config: {{delayMicros: {delay_us}}}
  batching: {{maxBatchSize: 1, instances: 1, maxQueueDelayMicros: 0, policy: fixed{extra_batching}}}
{slo}"""


DEFAULT_SLO = """\
  slo:
    onOverload: default-output
    defaultOutput: {late: true}
"""

FUNCTIONS = {
    "timeout-param": slow_echo("timeout-param", OCCUPY_US),
    "timeout-param-grpc": slow_echo("timeout-param-grpc", OCCUPY_US),
    "timeout-manifest": slow_echo("timeout-manifest", OCCUPY_US, ", timeoutMicros: 100000"),
    "admission-reject": slow_echo("admission-reject", TEACH_US),
    "admission-default": slow_echo("admission-default", TEACH_US, slo=DEFAULT_SLO),
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deadlines")
    manifests = tmp / "manifests"
    manifests.mkdir()
    for name, text in FUNCTIONS.items():
        (manifests / f"{name}.yaml").write_text(text)
    proc = AgentProcess(manifests, tmp / "agent.log").start()
    try:
        proc.wait_ready(timeout_s=30.0)
    except RuntimeError as e:
        proc.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    yield proc
    assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def body(text, **parameters):
    doc = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    if parameters:
        doc["parameters"] = parameters
    return doc


def infer(agent, model, text, **parameters):
    return requests.post(f"{agent.http_url}/v2/models/{model}/infer",
                         json=body(text, **parameters), timeout=30)


def metrics(agent):
    return parse_metrics(requests.get(f"{agent.http_url}/metrics", timeout=10).text)


def wait_for(predicate, what, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(0.01)


class Occupier:
    """A request without a timeout that holds `model`'s only executor for 1 s; start() returns
    once the agent has accepted it."""

    def __init__(self, agent, model):
        self.agent, self.model, self.response = agent, model, None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        self.response = infer(self.agent, self.model, "first")

    def start(self):
        self.thread.start()
        wait_for(lambda: metric_sum(metrics(self.agent), "ferry_inference_pending_request_count",
                                    model=self.model) >= 1, f"{self.model} busy")
        return self

    def join(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert self.response.status_code == 200, self.response.text
        assert self.response.json()["outputs"][0]["data"] == ["first"]


def failures(agent, model, reason):
    return metric_sum(metrics(agent), "ferry_inference_request_failure", model=model,
                      reason=reason)


def test_request_timeout_parameter_ends_in_504(agent):
    # Queued behind a 1 s batch with a 100 ms budget: the deadline passes in the queue.
    first = Occupier(agent, "timeout-param").start()
    r = infer(agent, "timeout-param", "late", timeout=100_000)
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["error"], r.text
    first.join()
    assert failures(agent, "timeout-param", "timeout") == 1
    # Alone, a request with room for its 1 s is served.
    r = infer(agent, "timeout-param", "in time", timeout=5_000_000)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["in time"]


def test_request_timeout_grpc_is_deadline_exceeded(agent):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{agent.grpc_port}")
    try:
        first = Occupier(agent, "timeout-param-grpc").start()
        x = grpcclient.InferInput("INPUT0", [1], "BYTES")
        x.set_data_from_numpy(np.array([b"late"], dtype=np.object_))
        with pytest.raises(InferenceServerException) as e:
            client.infer("timeout-param-grpc", [x], timeout=100_000)
        assert "DEADLINE_EXCEEDED" in str(e.value.status()), e.value
        first.join()
    finally:
        client.close()


def test_manifest_timeout_ends_in_504(agent):
    # batching.timeoutMicros (100 ms) applies to every request of the function. The first one
    # is admitted (nothing is known yet about how long a batch takes) and runs to completion;
    # the one queued behind it times out.
    first = Occupier(agent, "timeout-manifest").start()
    r = infer(agent, "timeout-manifest", "late")
    assert r.status_code == 504, r.text
    first.join()
    # A request may shorten the function's timeout, never lengthen it: 10 s is still 100 ms.
    # (One batch has run so far, too few for admission to predict, so this one queues too.)
    first = Occupier(agent, "timeout-manifest").start()
    r = infer(agent, "timeout-manifest", "late", timeout=10_000_000)
    assert r.status_code == 504, r.text
    first.join()
    assert failures(agent, "timeout-manifest", "timeout") == 2


def teach(agent, model, batches=3):
    """Runs `batches` requests one after the other, so that the function's execution-time
    model knows a batch takes 300 ms and admission starts to trust it."""
    for i in range(batches):
        r = infer(agent, model, f"warm{i}")
        assert r.status_code == 200, r.text


def test_admission_rejects_a_deadline_it_cannot_meet(agent):
    teach(agent, "admission-reject")
    r = infer(agent, "admission-reject", "hopeless", timeout=50_000)
    assert r.status_code == 429, r.text
    assert "deadline" in r.json()["error"], r.text
    # Refused at admission: it never ran.
    assert metric_sum(metrics(agent), "ferry_inference_exec_count", model="admission-reject") == 3
    assert failures(agent, "admission-reject", "overload") == 1
    assert failures(agent, "admission-reject", "timeout") == 0


def test_admission_answers_default_output_when_deadline_cannot_be_met(agent):
    teach(agent, "admission-default")
    before = metric_sum(metrics(agent), "ferry_inference_default_output",
                        model="admission-default")
    # KServe: no outputs, and the SLO's defaultOutput as JSON text in the response parameter
    # "default_output" (docs/http-api.md).
    r = infer(agent, "admission-default", "hopeless", timeout=50_000)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_name": "admission-default", "model_version": "1",
                        "parameters": {"default_output": '{"late":true}'}, "outputs": []}
    after = metric_sum(metrics(agent), "ferry_inference_default_output",
                       model="admission-default")
    assert after - before == 1
    assert failures(agent, "admission-default", "overload") == 0
    # With room for its 300 ms, the same request is served.
    r = infer(agent, "admission-default", "in time", timeout=5_000_000)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["in time"]
