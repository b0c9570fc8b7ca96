"""Health, server metadata and model metadata over HTTP and gRPC, with the stock clients."""

import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from e2e_util import curl

MODELS = ("echo", "echo-fp32", "wordfilter", "mlp", "slow", "slow-default")

# name -> (inputs, outputs), each [(name, datatype, shape)] as clients should send them.
SIGNATURES = {
    "echo": ([("INPUT0", "BYTES", [-1])], [("OUTPUT0", "BYTES", [-1])]),
    "echo-fp32": ([("INPUT0", "FP32", [-1, 4])], [("OUTPUT0", "FP32", [-1, 4])]),
    "wordfilter": ([("text", "BYTES", [-1])], [("filtered", "BYTES", [-1]),
                                                 ("count", "INT32", [-1])]),
    "mlp": ([("input", "FP32", [-1, 16])], [("output", "FP32", [-1, 8])]),
}


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


def tensors(entries):
    return sorted((t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in entries)


def test_server_live_and_ready_http(http, ferry):
    assert http.is_server_live()
    assert http.is_server_ready()
    r = requests.get(f"{ferry.http_url}/v2/health/ready", timeout=10)
    assert r.status_code == 200


def test_server_live_and_ready_grpc(grpc):
    assert grpc.is_server_live()
    assert grpc.is_server_ready()


def test_server_metadata_http(http):
    md = http.get_server_metadata()
    assert md["name"] == "ferry"
    assert isinstance(md["version"], str) and md["version"]
    assert "binary_tensor_data" in md["extensions"]


def test_server_metadata_grpc(grpc):
    md = grpc.get_server_metadata(as_json=True)
    assert md["name"] == "ferry"
    assert isinstance(md["version"], str) and md["version"]
    assert "binary_tensor_data" in md["extensions"]


@pytest.mark.parametrize("model", MODELS)
def test_model_ready(http, grpc, model):
    assert http.is_model_ready(model)
    assert grpc.is_model_ready(model)


def test_unknown_model_not_ready(http, grpc, ferry):
    assert not http.is_model_ready("no-such-model")
    r = requests.get(f"{ferry.http_url}/v2/models/no-such-model/ready", timeout=10)
    assert r.status_code == 404
    # gRPC answers NOT_FOUND for a model it does not know, not ready=false (docs/grpc-api.md).
    with pytest.raises(InferenceServerException) as e:
        grpc.is_model_ready("no-such-model")
    assert "NOT_FOUND" in str(e.value.status())


@pytest.mark.parametrize("model", sorted(SIGNATURES))
def test_model_metadata_http(http, model):
    md = http.get_model_metadata(model)
    inputs, outputs = SIGNATURES[model]
    assert md["name"] == model
    assert md["platform"]
    assert tensors(md["inputs"]) == sorted(inputs)
    assert tensors(md["outputs"]) == sorted(outputs)


@pytest.mark.parametrize("model", sorted(SIGNATURES))
def test_model_metadata_grpc(grpc, model):
    md = grpc.get_model_metadata(model, as_json=True)
    inputs, outputs = SIGNATURES[model]
    assert md["name"] == model
    assert tensors(md["inputs"]) == sorted(inputs)
    assert tensors(md["outputs"]) == sorted(outputs)


def test_model_metadata_unknown(http, grpc, ferry):
    r = requests.get(f"{ferry.http_url}/v2/models/no-such-model", timeout=10)
    assert r.status_code == 404
    assert "error" in r.json()
    with pytest.raises(InferenceServerException) as e:
        grpc.get_model_metadata("no-such-model")
    assert "NOT_FOUND" in str(e.value.status())


def test_health_with_curl(ferry):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/echo/ready"):
        code, _ = curl(f"{ferry.http_url}{path}")
        assert code == 200, path
    code, _ = curl(f"{ferry.http_url}/v2/models/no-such-model/ready")
    assert code == 404
