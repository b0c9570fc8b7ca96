"""The sentence-embedding runtime with the real all-MiniLM-L6-v2 weights (`make models` puts them
in models/all-MiniLM-L6-v2):

- ferry's WordPiece tokenizer gives the same ids as the Hugging Face `tokenizers` library on a
  corpus of > 2,000 varied strings (tests/reference/tokenizer_corpus.py);
- ferry's CPU embeddings match a NumPy forward pass over the same weights (cosine >= 0.99999 on
  55 sentences);
- through HTTP: close sentences score higher than unrelated ones, and bad input gets a 400;
- the TEI (`POST /embed`) and OpenAI (`POST /v1/embeddings`) endpoints give the KServe
  endpoint's embeddings in their own shapes, with their own error shapes; the token budget
  (maxBatchTokens: 32 here) lets a request over it run alone.
"""

import base64
import os
import pathlib
import sys

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from agentproc import REPO_ROOT, AgentProcess

sys.path.insert(0, str(REPO_ROOT / "tests" / "reference"))
import compare_embeddings  # noqa: E402
import compare_tokenizer  # noqa: E402
import tokenizer_corpus  # noqa: E402

MODEL_DIR = REPO_ROOT / "models" / "all-MiniLM-L6-v2"
pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "model.safetensors").exists(),
    reason=f"{MODEL_DIR} is missing: run `make models` (scripts/fetch_minilm.py)")


def build_dir():
    d = pathlib.Path(os.environ.get("FERRY_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO_ROOT / d


def embed_tool():
    tool = build_dir() / "kernels" / "ferry-embed-tool"
    if not tool.exists():
        pytest.fail(f"{tool} not found: build the ferry-embed-tool target", pytrace=False)
    return str(tool)


def test_tokenizer_matches_reference_library():
    texts = tokenizer_corpus.corpus()
    assert len(texts) >= 2000
    bad = compare_tokenizer.compare(embed_tool(), str(MODEL_DIR / "vocab.txt"), 256, texts)
    out = build_dir() / "reference"
    out.mkdir(exist_ok=True)
    (out / "tokenizer_mismatches.txt").write_text(f"{len(bad)} of {len(texts)}\n")
    print(f"tokenizer: {len(texts)} strings, {len(bad)} mismatches")
    assert not bad, "first mismatches: " + "; ".join(
        f"{t!r}: ferry {g} vs reference {r}" for t, g, r in bad[:5])


def test_cpu_embeddings_match_numpy_reference():
    cos, text, max_abs = compare_embeddings.lowest_cosine(embed_tool(), str(MODEL_DIR))
    assert len(compare_embeddings.SENTENCES) >= 50
    print(f"embeddings: lowest cosine {cos:.9f}, max |diff| {max_abs:.2e}")
    assert cos >= 0.99999, f"cosine {cos} for {text!r}"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("minilm")
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "minilm.yaml").write_text(f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: minilm}}
spec:
  runtime: sentence-embedding
  model: {{uri: "{MODEL_DIR.as_uri()}"}}
  batching: {{maxBatchSize: 64, maxQueueDelayMicros: 1000, maxBatchTokens: 32}}
""")
    agent = AgentProcess(manifests, tmp / "agent.log")
    agent.start()
    try:
        agent.wait_ready(timeout_s=60.0)
    except RuntimeError as e:
        agent.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    yield agent
    assert agent.terminate(timeout_s=15.0) == 0, agent.log()


def embed_http(agent, texts):
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                        "data": texts}]}
    r = requests.post(f"{agent.http_url}/v2/models/minilm/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "embedding" and out["datatype"] == "FP32"
    assert out["shape"] == [len(texts), 384]
    return np.array(out["data"], dtype=np.float64).reshape(len(texts), 384)


def test_metadata_declares_text_in_embedding_out(minilm):
    meta = requests.get(f"{minilm.http_url}/v2/models/minilm", timeout=10).json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_close_sentences_score_higher_than_unrelated_ones(minilm):
    pairs = [
        ("A man is eating food.", "A man is eating a piece of bread.",
         "The stock market fell sharply on Tuesday."),
        ("How do I reset my password?", "Steps to recover a forgotten account password",
         "Photosynthesis converts light energy into chemical energy."),
        ("The cat sits outside.", "A cat is sitting outdoors.", "GPUs accelerate matrix math."),
        ("What is the capital of France?", "Paris is the capital of France.",
         "A monkey is playing drums."),
    ]
    texts = [t for p in pairs for t in p]
    e = embed_http(minilm, texts)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    for i, (a, close, far) in enumerate(pairs):
        ea, ec, ef = e[3 * i], e[3 * i + 1], e[3 * i + 2]
        assert ea @ ec > ea @ ef + 0.2, (a, close, far, ea @ ec, ea @ ef)
    # The same sentence alone and in a batch: the same embedding.
    alone = embed_http(minilm, [texts[0]])
    np.testing.assert_allclose(alone[0], e[0], atol=1e-5)


def test_binary_protocol_and_reference_agree(minilm):
    client = httpclient.InferenceServerClient(minilm.http_hostport)
    texts = ["The quick brown fox jumps over the lazy dog.", "Café au lait, s'il vous plaît!"]
    inp = httpclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_),
                            binary_data=True)
    out = httpclient.InferRequestedOutput("embedding", binary_data=True)
    got = client.infer("minilm", [inp], outputs=[out]).as_numpy("embedding")
    client.close()
    assert got.shape == (2, 384) and got.dtype == np.float32
    want = compare_embeddings.minilm_numpy.embed(str(MODEL_DIR), texts)
    cos = (got * want).sum(1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos


def test_bad_input_is_a_400(minilm):
    url = f"{minilm.http_url}/v2/models/minilm/infer"

    def post(inputs):
        return requests.post(url, json={"inputs": inputs}, timeout=30)

    # Wrong datatype, wrong name, empty batch.
    r = post([{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}])
    assert r.status_code == 400, r.text
    r = post([{"name": "sentence", "shape": [1], "datatype": "BYTES", "data": ["x"]}])
    assert r.status_code == 400, r.text
    r = post([{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}])
    assert r.status_code == 400, r.text
    # Bytes that are not UTF-8, through the binary tensor extension (JSON strings cannot
    # carry them).
    client = httpclient.InferenceServerClient(minilm.http_hostport)
    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"fine", b"bad \xff\xfe bytes"], dtype=np.object_),
                            binary_data=True)
    with pytest.raises(InferenceServerException) as e:
        client.infer("minilm", [inp])
    client.close()
    assert str(e.value.status()) == "400", str(e.value)
    assert "not valid UTF-8" in str(e.value) and "element 1" in str(e.value), str(e.value)
    # And the model still serves.
    assert embed_http(minilm, ["still here"]).shape == (1, 384)


TEXTS = ["A man is eating food.", "Café au lait, s'il vous plaît!", "GPUs accelerate matrix math."]


def test_tei_embed_matches_kserve(minilm):
    want = embed_http(minilm, TEXTS)  # 3 texts, more than the 32-token budget: runs alone
    r = requests.post(f"{minilm.http_url}/embed", json={"inputs": TEXTS}, timeout=30)
    assert r.status_code == 200, r.text
    got = np.array(r.json(), dtype=np.float64)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # A single string, normalize/truncate given, the function named explicitly: two ways.
    one = {"inputs": TEXTS[0], "normalize": True, "truncate": True}
    for kwargs in ({"params": {"model": "minilm"}}, {"headers": {"X-Ferry-Model": "minilm"}}):
        r = requests.post(f"{minilm.http_url}/embed", json=one, timeout=30, **kwargs)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()), want[:1], atol=1e-6)


def test_tei_embed_errors(minilm):
    url = f"{minilm.http_url}/embed"
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (b"[1]", 400, "JSON object"),
        (b"{}", 400, "missing 'inputs'"),
        (b'{"inputs": 3}', 400, "'inputs' must be a string or an array of strings"),
        (b'{"inputs": []}', 400, "must not be an empty array"),
        (b'{"inputs": ["a", 1]}', 400, "'inputs'[1] must be a string"),
        (b'{"inputs": "a", "normalize": "yes"}', 400, "'normalize' must be a boolean"),
        (b'{"inputs": "a", "normalize": false}', 400, "L2-normalised"),
    ]
    for body, status, message in cases:
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == status, (body, r.text)
        err = r.json()
        assert message in err["error"] and err["error_type"] == "Validation", (body, err)
    r = requests.post(url, params={"model": "nope"}, json={"inputs": "a"}, timeout=30)
    assert r.status_code == 404, r.text
    assert "nope" in r.json()["error"]
    assert requests.get(url, timeout=10).status_code == 405


def test_openai_embeddings_float_and_base64(minilm):
    want = embed_http(minilm, TEXTS)
    url = f"{minilm.http_url}/v1/embeddings"
    r = requests.post(url, json={"model": "minilm", "input": TEXTS}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), want, atol=1e-6)
    # Tokens after WordPiece, [CLS] and [SEP] included: at least 3 per text here.
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] and usage["prompt_tokens"] > 3 * 3
    r = requests.post(url, json={"model": "minilm", "input": TEXTS[1],
                                 "encoding_format": "base64"}, timeout=30)
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), want[1], atol=1e-6)


def test_openai_embeddings_errors(minilm):
    url = f"{minilm.http_url}/v1/embeddings"
    cases = [
        (b"{oops", 400, "malformed JSON"),
        (b'{"input": "a"}', 400, "missing 'model'"),
        (b'{"model": "minilm"}', 400, "missing 'input'"),
        (b'{"model": "minilm", "input": ""}', 200, None),  # an empty string is a text
        (b'{"model": "minilm", "input": []}', 400, "must not be an empty array"),
        (b'{"model": "minilm", "input": [[1, 2]]}', 400, "'input'[0] must be a string"),
        (b'{"model": "minilm", "input": "a", "encoding_format": "int8"}', 400,
         "encoding_format"),
        (b'{"model": "nope", "input": "a"}', 404, "nope"),
    ]
    for body, status, message in cases:
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == status, (body, r.text)
        if message is None:
            continue
        err = r.json()["error"]
        assert message in err["message"], (body, err)
        assert err["type"] == "invalid_request_error", (body, err)
    assert r.json()["error"]["code"] == "model_not_found"


def test_openai_client(minilm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{minilm.http_url}/v1", api_key="unused")
    res = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64
    got = np.array([d.embedding for d in res.data])
    np.testing.assert_allclose(got, embed_http(minilm, TEXTS), atol=1e-6)
    assert res.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="a")
