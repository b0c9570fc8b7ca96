"""Errors: every bad request gets the right status and a {"error": ...} body, and the agent keeps
serving afterwards."""

import socket
import threading

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from e2e_util import MAX_BODY_BYTES


def post_infer(ferry, model, body):
    """POSTs a KServe request: `body` is a dict (sent as JSON) or raw bytes."""
    url = f"{ferry.http_url}/v2/models/{model}/infer"
    if isinstance(body, bytes):
        return requests.post(url, data=body, headers={"Content-Type": "application/json"},
                             timeout=20)
    return requests.post(url, json=body, timeout=20)


def assert_error(response, status):
    assert response.status_code == status, response.text
    doc = response.json()
    assert isinstance(doc.get("error"), str) and doc["error"], doc


def fp32_body(shape, data, datatype="FP32", name="INPUT0"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.fixture(scope="module")
def grpc(ferry):
    client = grpcclient.InferenceServerClient(ferry.grpc_hostport)
    yield client
    client.close()


def echo_still_works(ferry):
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
    r = post_infer(ferry, "echo", body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["ok"]


@pytest.mark.parametrize("body", [
    b"{not json",
    b"",
    b"[1, 2, 3]",
    b'{"inputs": "nope"}',
    b'{"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32"}]}',  # no data
])
def test_malformed_json(ferry, body):
    assert_error(post_infer(ferry, "echo-fp32", body), 400)


def test_wrong_shape(ferry):
    # Rows hold 4 values; 3 per row is a shape mismatch, and so is a data count off the shape.
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([2, 3], [0] * 6)), 400)
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([4], [0] * 4)), 400)
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([2, 4], [0] * 7)), 400)
    r = post_infer(ferry, "echo-fp32", fp32_body([2, 3], [0] * 6))
    assert "INPUT0" in r.json()["error"]


def test_wrong_datatype(ferry):
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([1, 4], [1, 2, 3, 4], "INT32")), 400)
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([1, 4], [1, 2, 3, 4], "NOPE32")), 400)
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([1, 4], ["a", "b", "c", "d"])), 400)


def test_wrong_input_name(ferry):
    assert_error(post_infer(ferry, "echo-fp32", fp32_body([1, 4], [1, 2, 3, 4], name="X")), 400)


def test_unknown_output(ferry):
    body = fp32_body([1, 4], [1, 2, 3, 4])
    body["outputs"] = [{"name": "NOPE"}]
    assert_error(post_infer(ferry, "echo-fp32", body), 400)


def test_unknown_model_http(ferry):
    assert_error(post_infer(ferry, "no-such-model", fp32_body([1, 4], [1, 2, 3, 4])), 404)


def test_unknown_model_grpc(grpc):
    t = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    t.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("no-such-model", [t], client_timeout=20.0)
    assert "NOT_FOUND" in str(e.value.status())


def test_wrong_shape_grpc(grpc):
    t = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
    t.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("echo-fp32", [t], client_timeout=20.0)
    assert "INVALID_ARGUMENT" in str(e.value.status())


def test_wrong_datatype_grpc(grpc):
    t = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
    t.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("echo-fp32", [t], client_timeout=20.0)
    assert "INVALID_ARGUMENT" in str(e.value.status())


def raw_http(port, head, body, timeout=20.0):
    """Sends `head` then `body` (from a thread: the server may answer, and close, before it has
    read the whole body) and returns (status, response bytes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send_body():
        try:
            sock.sendall(body)
        except OSError:
            pass  # the server answered early and closed: fine

    sock.sendall(head)
    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_end = data.find(b"\r\n\r\n")
        length = 0
        for line in data[:head_end].split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(data) < head_end + 4 + length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    sender.join(timeout=5)
    assert data.startswith(b"HTTP/1."), f"no HTTP response: {data[:200]!r}"
    return int(data.split(b" ", 2)[1]), data[data.find(b"\r\n\r\n") + 4:]


def test_oversized_body(ferry):
    size = 2 * MAX_BODY_BYTES
    body = b'{"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["' + \
        b"x" * size + b'"]}]}'
    head = (f"POST /v2/models/echo/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status, payload = raw_http(ferry.agent.http_port, head, body)
    assert status == 413, payload[:200]
    echo_still_works(ferry)


def test_body_under_limit_is_accepted(ferry):
    # Just under the limit works: the limit is on the body, not on something smaller.
    text = "y" * (MAX_BODY_BYTES - 1024)
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    r = post_infer(ferry, "echo", body)
    assert r.status_code == 200, r.text[:200]
    assert r.json()["outputs"][0]["data"] == [text]


def test_agent_serves_after_errors(ferry):
    echo_still_works(ferry)
    assert requests.get(f"{ferry.http_url}/v2/health/ready", timeout=10).status_code == 200
