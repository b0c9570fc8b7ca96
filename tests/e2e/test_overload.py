"""Load shedding: a burst at `slow` (one 300 ms request at a time, two waiting) overflows its
queue. Overflow is answered at once with 429 / RESOURCE_EXHAUSTED, everything accepted is
served, nothing hangs, and the agent is healthy afterwards."""

import concurrent.futures
import threading
import time

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

BURST = 12


def burst(fn):
    """Runs fn(i) for i in range(BURST) on BURST threads released together."""
    barrier = threading.Barrier(BURST)

    def run(i):
        barrier.wait(timeout=10)
        started = time.monotonic()
        result = fn(i)
        return result, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(run, range(BURST)))


def assert_healthy(ferry):
    assert requests.get(f"{ferry.http_url}/v2/health/ready", timeout=10).status_code == 200
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/echo/infer", json=body, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["ok"]


def test_queue_full_http(ferry):
    def one(i):
        body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                            "data": [f"r{i}"]}]}
        # A client-side timeout: a hang fails the test instead of stalling it.
        return requests.post(f"{ferry.http_url}/v2/models/slow/infer", json=body, timeout=30)

    results = burst(one)
    codes = sorted(r.status_code for r, _ in results)
    assert set(codes) <= {200, 429}, codes
    assert 429 in codes, f"no request was shed: {codes}"
    assert 200 in codes, f"no request was served: {codes}"
    for i, (r, elapsed) in enumerate(results):
        if r.status_code == 200:
            assert r.json()["outputs"][0]["data"] == [f"r{i}"]
        else:
            assert r.json().get("error"), r.text
            # Shedding is immediate: a rejected request does not wait out the queue (three
            # 300 ms slots).
            assert elapsed < 0.9, f"429 took {elapsed:.2f} s"
    assert_healthy(ferry)


def test_queue_full_grpc(ferry):
    def one(i):
        client = grpcclient.InferenceServerClient(ferry.grpc_hostport)
        try:
            data = np.array([f"g{i}".encode()], dtype=np.object_)
            t = grpcclient.InferInput("INPUT0", [1], "BYTES")
            t.set_data_from_numpy(data)
            try:
                res = client.infer("slow", [t], client_timeout=30.0)
                return "OK", res.as_numpy("OUTPUT0").tolist()
            except InferenceServerException as e:
                return str(e.status()), e.message()
        finally:
            client.close()

    results = burst(one)
    codes = sorted(code for (code, _), _ in results)
    assert set(codes) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, results
    assert "StatusCode.RESOURCE_EXHAUSTED" in codes, f"no request was shed: {codes}"
    assert "OK" in codes, f"no request was served: {codes}"
    for i, ((code, value), _) in enumerate(results):
        if code == "OK":
            assert value == [f"g{i}".encode()]
    assert_healthy(ferry)
