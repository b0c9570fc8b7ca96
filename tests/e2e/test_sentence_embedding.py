"""The sentence-embedding runtime with the real all-MiniLM-L6-v2 weights (`make models` puts them
in models/all-MiniLM-L6-v2):

- ferry's WordPiece tokenizer gives the same ids as the Hugging Face `tokenizers` library on a
  corpus of > 2,000 varied strings (tests/reference/tokenizer_corpus.py);
- ferry's CPU embeddings match a NumPy forward pass over the same weights (cosine >= 0.99999 on
  55 sentences);
- through HTTP: close sentences score higher than unrelated ones, and bad input gets a 400.
"""

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
  batching: {{maxBatchSize: 64, maxQueueDelayMicros: 1000}}
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
