"""Inference on every runtime through tritonclient: HTTP JSON, HTTP binary tensors, gRPC."""

import concurrent.futures
import json

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from e2e_util import DOCUMENTS, as_bytes, curl, filter_reference

# "json": HTTP with JSON tensors; "binary": HTTP with the binary tensor extension for inputs and
# outputs; "grpc": gRPC with raw_input_contents (tritonclient's default).
MODES = ("json", "binary", "grpc")


@pytest.fixture(scope="module")
def http(ferry):
    client = httpclient.InferenceServerClient(ferry.http_hostport, network_timeout=20.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(ferry):
    client = grpcclient.InferenceServerClient(ferry.grpc_hostport)
    yield client
    client.close()


def infer(mode, http, grpc, model, inputs, outputs):
    """Runs one request. `inputs`: [(name, numpy array, datatype)]; `outputs`: names.
    Returns {output name: numpy array} and the raw result object."""
    if mode == "grpc":
        ins = []
        for name, array, dtype in inputs:
            t = grpcclient.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(array)
            ins.append(t)
        outs = [grpcclient.InferRequestedOutput(n) for n in outputs]
        result = grpc.infer(model, ins, outputs=outs, request_id="req-42", client_timeout=20.0)
    else:
        binary = mode == "binary"
        ins = []
        for name, array, dtype in inputs:
            t = httpclient.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(array, binary_data=binary)
            ins.append(t)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = http.infer(model, ins, outputs=outs, request_id="req-42")
        for n in outputs:
            params = result.get_output(n).get("parameters", {})
            if binary:
                assert "binary_data_size" in params, f"output {n} did not come back binary"
            else:
                assert "data" in result.get_output(n), f"output {n} did not come back as JSON"
    return {n: result.as_numpy(n) for n in outputs}, result


def response_id(mode, result):
    if mode == "grpc":
        return result.get_response().id
    return result.get_response().get("id")


@pytest.mark.parametrize("mode", MODES)
def test_echo_bytes(mode, http, grpc):
    if mode == "json":
        data = [b"hello", b"", "gr\u00fc\u00df dich".encode(), b"x" * 1000]
    else:  # binary and gRPC carry arbitrary bytes, NULs included
        data = [b"hello", b"", b"\x00\xff\x01 binary", b"x" * 1000]
    array = np.array(data, dtype=np.object_)
    out, result = infer(mode, http, grpc, "echo", [("INPUT0", array, "BYTES")], ["OUTPUT0"])
    got = out["OUTPUT0"]
    assert got.shape == (4,)
    assert [as_bytes(v) for v in got] == data
    assert response_id(mode, result) == "req-42"


@pytest.mark.parametrize("mode", MODES)
def test_echo_fp32(mode, http, grpc):
    array = np.arange(12, dtype=np.float32).reshape(3, 4) * np.float32(0.5) - np.float32(2.25)
    out, _ = infer(mode, http, grpc, "echo-fp32", [("INPUT0", array, "FP32")], ["OUTPUT0"])
    got = out["OUTPUT0"]
    assert got.dtype == np.float32
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("mode", MODES)
def test_wordfilter(mode, http, grpc):
    array = np.array([d.encode("utf-8") for d in DOCUMENTS], dtype=np.object_)
    out, _ = infer(mode, http, grpc, "wordfilter", [("text", array, "BYTES")],
                   ["filtered", "count"])
    expected = [filter_reference(d) for d in DOCUMENTS]
    assert out["filtered"].shape == (len(DOCUMENTS),)
    assert [as_bytes(v).decode("utf-8") for v in out["filtered"]] == [e[0] for e in expected]
    assert out["count"].dtype == np.int32
    assert out["count"].tolist() == [e[1] for e in expected]


@pytest.mark.parametrize("mode", MODES)
def test_wordfilter_only_requested_output(mode, http, grpc):
    array = np.array([b"darn it"], dtype=np.object_)
    out, result = infer(mode, http, grpc, "wordfilter", [("text", array, "BYTES")], ["count"])
    assert out["count"].tolist() == [1]
    if mode == "grpc":
        names = [o.name for o in result.get_response().outputs]
    else:
        names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["count"]


@pytest.mark.parametrize("mode", MODES)
def test_mlp(mode, http, grpc, ferry):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    out, _ = infer(mode, http, grpc, "mlp", [("input", x, "FP32")], ["output"])
    got = out["output"]
    assert got.dtype == np.float32
    assert got.shape == (5, 8)
    np.testing.assert_allclose(got, ferry.mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_mlp_single_row_matches_batch(http, ferry):
    # The same row alone and inside a batch must give the same answer (batching is invisible).
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    batch, _ = infer("binary", http, None, "mlp", [("input", x, "FP32")], ["output"])
    for i in range(4):
        one, _ = infer("binary", http, None, "mlp", [("input", x[i:i + 1], "FP32")], ["output"])
        np.testing.assert_allclose(one["output"][0], batch["output"][i], rtol=1e-5, atol=1e-6)


def test_outputs_omitted_returns_all(ferry):
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                        "data": ["what the heck", "fine"]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/wordfilter/infer", json=body, timeout=20)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "wordfilter"
    outs = {o["name"]: o for o in doc["outputs"]}
    assert set(outs) == {"filtered", "count"}
    assert outs["filtered"]["data"] == ["what the ####", "fine"]
    assert outs["filtered"]["datatype"] == "BYTES"
    assert outs["count"]["data"] == [1, 0]
    assert outs["count"]["datatype"] == "INT32"
    assert [int(d) for d in outs["count"]["shape"]] == [2]


def test_nested_json_data(ferry):
    # KServe allows `data` nested like the shape as well as flat.
    body = {"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32",
                        "data": [[1, 2, 3, 4], [5, 6, 7, 8.5]]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/echo-fp32/infer", json=body, timeout=20)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert np.array(out["data"], dtype=np.float32).reshape(2, 4).tolist() == \
        [[1, 2, 3, 4], [5, 6, 7, 8.5]]


def test_versions_path(http, ferry):
    md = http.get_model_metadata("echo")
    versions = md.get("versions") or []
    if "1" not in versions:
        pytest.skip(f"echo reports versions {versions!r}, not '1'")
    base = f"{ferry.http_url}/v2/models/echo/versions/1"
    assert requests.get(f"{base}/ready", timeout=10).status_code == 200
    body = {"id": "v1", "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                                    "data": ["versioned"]}]}
    r = requests.post(f"{base}/infer", json=body, timeout=20)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "v1"
    assert doc["outputs"][0]["data"] == ["versioned"]
    r = requests.post(f"{ferry.http_url}/v2/models/echo/versions/999/infer", json=body,
                      timeout=20)
    assert r.status_code == 404


def test_infer_with_curl(ferry):
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                   "data": ["you are a darn fool"]}]})
    code, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                     f"{ferry.http_url}/v2/models/wordfilter/infer")
    assert code == 200, out
    outs = {o["name"]: o["data"] for o in json.loads(out)["outputs"]}
    assert outs["filtered"] == ["you are a #### fool"]
    assert outs["count"] == [1]


def test_concurrent_requests_are_answered_individually(ferry):
    # Many small requests at once get batched by the agent; each must get its own rows back.
    def one(i):
        data = np.array([f"req-{i}-{j}".encode() for j in range(i % 3 + 1)], dtype=np.object_)
        t = httpclient.InferInput("INPUT0", list(data.shape), "BYTES")
        t.set_data_from_numpy(data, binary_data=True)
        c = httpclient.InferenceServerClient(ferry.http_hostport, network_timeout=20.0)
        try:
            res = c.infer("echo", [t], outputs=[httpclient.InferRequestedOutput(
                "OUTPUT0", binary_data=True)])
            return [as_bytes(v) for v in res.as_numpy("OUTPUT0")] == list(data)
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert all(results)
