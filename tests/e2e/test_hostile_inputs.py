"""Hostile request contents on every front end: declared sizes that would need terabytes, byte
sizes that overflow, ragged batches, out-of-range timeouts and oversized echoed fields. Each gets
a clear 400 / INVALID_ARGUMENT (never a crash, never an allocation sized by the client), and the
agent keeps serving afterwards."""

import json
import struct

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from test_robustness import assert_serving

TB_ROWS = 1 << 40  # rows whose buffers would need terabytes


def post(ferry, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{ferry.http_url}{path}", data=data, headers=headers or {}, timeout=10)


def assert_alive_after(ferry, response, status, fragment):
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"], response.text
    assert_serving(ferry)
    assert requests.get(f"{ferry.http_url}/v2/health/live", timeout=5).status_code == 200


@pytest.mark.parametrize("model", ["x", "echo", "echo-fp32", "mlp"])
def test_huge_declared_shape_is_refused_on_any_model_name(ferry, model):
    # The request of the crash report: ~80 bytes declaring 2^40 FP32 elements.
    body = {"inputs": [{"name": "x", "shape": [TB_ROWS], "datatype": "FP32", "data": []}]}
    r = post(ferry, f"/v2/models/{model}/infer", body)
    expected = 404 if model == "x" else 400
    assert r.status_code == expected, r.text
    assert_serving(ferry)


def test_declared_batch_beyond_max_batch_size(ferry):
    body = {"inputs": [{"name": "INPUT0", "shape": [TB_ROWS, 4], "datatype": "FP32", "data": []}]}
    r = post(ferry, "/v2/models/echo-fp32/infer", body)
    assert_alive_after(ferry, r, 400, "exceeds maxBatchSize 32")


def test_byte_size_overflow_in_the_binary_extension(ferry):
    # FP32 [1, 2^62] with 0 bytes: elements * 4 wraps to 0 in 64 bits. Answered 200 before.
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1 << 62], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    r = post(ferry, "/v2/models/echo-fp32/infer", header,
             {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400, r.text
    assert_serving(ferry)


def test_huge_bytes_shape_in_the_binary_extension(ferry):
    payload = struct.pack("<I", 5) + b"hello"
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [TB_ROWS], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    r = post(ferry, "/v2/models/echo/infer", header + payload,
             {"Inference-Header-Content-Length": str(len(header))})
    assert_alive_after(ferry, r, 400, "INPUT0")


def test_ragged_clipper_batch_with_a_large_first_row(ferry):
    first = ["w"] * 20000
    body = {"input_batch": [first] + [["w"]] * 2000}
    r = post(ferry, "/echo/predict", body)
    assert r.status_code == 400, r.text
    assert_serving(ferry)


def test_json_element_count_beyond_the_body(ferry):
    body = {"inputs": [{"name": "INPUT0", "shape": [16], "datatype": "BYTES", "data": ["a"]}]}
    r = post(ferry, "/v2/models/echo/infer", body)
    assert_alive_after(ferry, r, 400, "INPUT0")


def test_int64_max_timeout_does_not_overflow_the_deadline(ferry):
    body = {"parameters": {"timeout": (1 << 63) - 1},
            "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["t"]}]}
    r = post(ferry, "/v2/models/echo/infer", body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["t"]


def test_echoed_fields_have_length_caps(ferry):
    body = {"id": "i" * 5000,
            "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["t"]}]}
    assert_alive_after(ferry, post(ferry, "/v2/models/echo/infer", body), 400, "'id'")
    body = {"parameters": {"tag": "t" * 5000},
            "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["t"]}]}
    assert_alive_after(ferry, post(ferry, "/v2/models/echo/infer", body), 400, "'tag'")


@pytest.fixture()
def stub(ferry):
    with grpc.insecure_channel(ferry.grpc_hostport) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_request(model, name, datatype, shape):
    req = service_pb2.ModelInferRequest(model_name=model)
    tensor = req.inputs.add(name=name, datatype=datatype)
    tensor.shape.extend(shape)
    return req


@pytest.mark.parametrize("model,name,datatype,shape,code", [
    ("x", "x", "FP32", [TB_ROWS], grpc.StatusCode.NOT_FOUND),
    ("echo-fp32", "INPUT0", "FP32", [TB_ROWS, 4], grpc.StatusCode.INVALID_ARGUMENT),
    ("echo-fp32", "INPUT0", "FP32", [1, 1 << 62], grpc.StatusCode.INVALID_ARGUMENT),
    ("echo", "INPUT0", "BYTES", [TB_ROWS], grpc.StatusCode.INVALID_ARGUMENT),
])
def test_grpc_huge_shapes(ferry, stub, model, name, datatype, shape, code):
    req = grpc_request(model, name, datatype, shape)
    req.raw_input_contents.append(b"\0" * 16)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=10)
    assert err.value.code() == code, err.value.details()
    # The server is still there, on both protocols.
    ok = grpc_request("echo", "INPUT0", "BYTES", [1])
    ok.raw_input_contents.append(struct.pack("<I", 2) + b"ok")
    reply = stub.ModelInfer(ok, timeout=10)
    assert reply.raw_output_contents[0] == struct.pack("<I", 2) + b"ok"
    assert_serving(ferry)


def test_invalid_utf8_cannot_flood_the_log(ferry):
    # protobuf logs an error for every message whose string field is not UTF-8; the agent lets
    # at most a few such lines through per second, however many requests carry one.
    before = ferry.agent.log().count("protobuf")
    model_name_not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (model_name), 2 bytes, invalid UTF-8
    with grpc.insecure_channel(ferry.grpc_hostport) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda raw: raw,
                                   response_deserializer=lambda raw: raw)
        for _ in range(300):
            with pytest.raises(grpc.RpcError):
                call(model_name_not_utf8, timeout=10)
    lines = ferry.agent.log().count("protobuf") - before
    # At least one got through (the limiter drops, it does not silence), and not one per request.
    assert 1 <= lines <= 20, f"{lines} protobuf log lines for 300 bad requests"
    assert_serving(ferry)
