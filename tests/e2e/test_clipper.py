"""Clipper-style prediction: POST /{name}/predict with {"input": row} or {"input_batch": rows}."""

import concurrent.futures
import threading

import requests

from e2e_util import DOCUMENTS, filter_reference


def predict(ferry, model, body, timeout=20):
    return requests.post(f"{ferry.http_url}/{model}/predict", json=body, timeout=timeout)


def check_batch(doc, outputs):
    """A batch answer is {"batch_predictions": [...]}: one object per query, shaped like the
    single answer, with consecutive query ids in query order (docs/http-api.md)."""
    assert set(doc) == {"batch_predictions"}, doc
    preds = doc["batch_predictions"]
    assert len(preds) == len(outputs), preds
    for i, (p, want) in enumerate(zip(preds, outputs)):
        assert set(p) == {"query_id", "output", "default"}, p
        assert p["output"] == want, (i, p)
        assert p["default"] is False, p
        assert p["query_id"] == preds[0]["query_id"] + i, preds


def test_predict_single_bytes(ferry):
    r = predict(ferry, "echo", {"input": "hello clipper"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"query_id", "output", "default"}, doc
    assert doc["output"] == "hello clipper"
    assert doc["default"] is False
    assert isinstance(doc["query_id"], int) and doc["query_id"] >= 0


def test_predict_single_fp32_row(ferry):
    row = [1.5, -2.0, 0.25, 8.0]
    r = predict(ferry, "echo-fp32", {"input": row})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["output"] == row
    assert doc["default"] is False


def test_predict_mlp_matches_numpy(ferry):
    import numpy as np
    x = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    r = predict(ferry, "mlp", {"input": x.tolist()})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["output"], dtype=np.float64)
    np.testing.assert_allclose(got, ferry.mlp_reference(x[None, :])[0], rtol=1e-4, atol=1e-5)


def test_predict_batch(ferry):
    rows = ["a", "bb", "", "dddd"]
    r = predict(ferry, "echo", {"input_batch": rows})
    assert r.status_code == 200, r.text
    check_batch(r.json(), rows)


def test_predict_batch_fp32(ferry):
    rows = [[1, 2, 3, 4], [5, 6, 7, 8], [0.5, 0.25, 0.125, 0]]
    r = predict(ferry, "echo-fp32", {"input_batch": rows})
    assert r.status_code == 200, r.text
    check_batch(r.json(), rows)


def test_predict_wordfilter_single(ferry):
    r = predict(ferry, "wordfilter", {"input": DOCUMENTS[1]})
    assert r.status_code == 200, r.text
    filtered, count = filter_reference(DOCUMENTS[1])
    # A model with several outputs answers an object of its outputs' rows by name.
    assert r.json()["output"] == {"filtered": filtered, "count": count}


def test_predict_wordfilter_batch(ferry):
    r = predict(ferry, "wordfilter", {"input_batch": DOCUMENTS[:3]})
    assert r.status_code == 200, r.text
    want = []
    for doc in DOCUMENTS[:3]:
        filtered, count = filter_reference(doc)
        want.append({"filtered": filtered, "count": count})
    check_batch(r.json(), want)


def test_predict_errors(ferry):
    r = predict(ferry, "no-such-model", {"input": "x"})
    assert r.status_code == 404
    assert "error" in r.json()
    r = predict(ferry, "echo-fp32", {"input": [1, 2, 3]})  # rows hold 4 values
    assert r.status_code == 400
    assert "error" in r.json()
    r = predict(ferry, "echo", {"no_input": 1})
    assert r.status_code == 400
    assert "error" in r.json()
    r = requests.post(f"{ferry.http_url}/echo/predict", data=b"{not json", timeout=20,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "error" in r.json()


def test_predict_default_output_under_overload(ferry):
    # slow-default runs one 300 ms request at a time with two waiting; a burst of 12 overflows
    # it, and the overflow must be answered with the SLO's default output, not an error.
    n = 12
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(timeout=10)
        return predict(ferry, "slow-default", {"input": f"q{i}"}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, range(n)))

    assert all(r.status_code == 200 for r in responses), [(r.status_code, r.text)
                                                          for r in responses]
    docs = [r.json() for r in responses]
    defaults = [d for d in docs if d["default"] is True]
    served = [(i, d) for i, d in enumerate(docs) if d["default"] is False]
    assert defaults, "no request got the default output under overload"
    assert served, "every request got the default output; none was served"
    assert all(d["output"] == "busy" for d in defaults)
    assert all(d["output"] == f"q{i}" for i, d in served)
    # The function is healthy again afterwards.
    r = predict(ferry, "slow-default", {"input": "after"})
    assert r.status_code == 200
    assert r.json()["output"] == "after"
    assert r.json()["default"] is False
