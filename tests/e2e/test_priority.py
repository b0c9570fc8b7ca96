"""Request priority (the KServe `priority` parameter, docs/batching.md): within one function's
queue, level 1 goes first, then 2, 3, ...; requests without a priority go last; FIFO within a
level. `ordered` runs one 1 s request at a time (long enough to queue the others behind it on a
busy machine), so the order in which queued requests finish is the order in which they left the
queue."""

import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from agentproc import AgentProcess
from e2e_util import metric_sum, parse_metrics

MANIFEST = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: ordered}
spec:
  runtime: echo
  config: {delayMicros: 1000000}
  batching: {maxBatchSize: 1, instances: 1, maxQueueDelayMicros: 0, policy: fixed}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("priority")
    (tmp / "ordered.yaml").write_text(MANIFEST)
    proc = AgentProcess(tmp / "ordered.yaml", tmp / "agent.log").start()
    try:
        proc.wait_ready(timeout_s=30.0)
    except RuntimeError as e:
        proc.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    yield proc
    assert proc.terminate(timeout_s=15.0) == 0, proc.log()


def pending(agent):
    samples = parse_metrics(requests.get(f"{agent.http_url}/metrics", timeout=10).text)
    return metric_sum(samples, "ferry_inference_pending_request_count", model="ordered")


def wait_pending(agent, n, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while pending(agent) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {n} requests accepted\n{agent.log()}")
        time.sleep(0.01)


class Log:
    """The order in which answers arrive."""

    def __init__(self):
        self.lock = threading.Lock()
        self.order = []

    def add(self, tag):
        with self.lock:
            self.order.append(tag)


def send_http(agent, tag, log, priority):
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [tag]}]}
    if priority is not None:
        body["parameters"] = {"priority": priority}

    def run():
        r = requests.post(f"{agent.http_url}/v2/models/ordered/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [tag]
        log.add(tag)

    t = threading.Thread(target=run)
    t.start()
    return t


def send_grpc(client, tag, log, priority):
    x = grpcclient.InferInput("INPUT0", [1], "BYTES")
    x.set_data_from_numpy(np.array([tag.encode()], dtype=np.object_))

    def run():
        kwargs = {} if priority is None else {"priority": priority}
        result = client.infer("ordered", [x], **kwargs)
        assert result.as_numpy("OUTPUT0").tolist() == [tag.encode()]
        log.add(tag)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_higher_priority_overtakes_the_queue(agent):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{agent.grpc_port}")
    log = Log()
    try:
        threads = [send_http(agent, "running", log, None)]
        wait_pending(agent, 1)
        # Queued one at a time behind the running request, so the arrival order is known; the
        # priority travels as a KServe parameter over HTTP and gRPC alike.
        for protocol, tag, priority in [("http", "d1", None), ("grpc", "p2", 2),
                                        ("http", "p1a", 1), ("grpc", "d2", 0),
                                        ("grpc", "p1b", 1)]:
            if protocol == "http":
                threads.append(send_http(agent, tag, log, priority))
            else:
                threads.append(send_grpc(client, tag, log, priority))
            wait_pending(agent, len(threads))
        assert log.order == [], "the running request finished before the queue was built"
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
    finally:
        client.close()
    assert log.order == ["running", "p1a", "p1b", "p2", "d1", "d2"]
