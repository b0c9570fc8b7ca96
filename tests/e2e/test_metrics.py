"""Prometheus metrics at GET /metrics move with the requests the agent serves and refuses."""

import concurrent.futures
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from e2e_util import curl, parse_metrics


def scrape(ferry):
    r = requests.get(f"{ferry.http_url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain")
    return parse_metrics(r.text)


def total(samples, name, **labels):
    """Sum over samples named exactly `name` whose labels include `labels`. ferry writes its
    counters under the names of docs/operations.md, without a `_total` suffix."""
    return sum(v for n, ls, v in samples
               if n == name and all(ls.get(k) == val for k, val in labels.items()))


def scrape_until(ferry, predicate, timeout_s=3.0):
    """Metrics may be recorded just after the response is sent: poll briefly."""
    deadline = time.monotonic() + timeout_s
    samples = scrape(ferry)
    while not predicate(samples) and time.monotonic() < deadline:
        time.sleep(0.05)
        samples = scrape(ferry)
    return samples


def echo(ferry, rows):
    body = {"inputs": [{"name": "INPUT0", "shape": [len(rows)], "datatype": "BYTES",
                        "data": rows}]}
    return requests.post(f"{ferry.http_url}/v2/models/echo/infer", json=body, timeout=20)


def test_metric_families_exposed(ferry):
    samples = scrape(ferry)
    names = {n for n, _, _ in samples}
    for family in ("ferry_inference_request_success", "ferry_inference_count",
                   "ferry_inference_exec_count", "ferry_inference_request_duration_us",
                   "ferry_inference_queue_duration_us",
                   "ferry_inference_compute_infer_duration_us"):
        assert family in names, family
        assert family + "_total" not in names, family
    for family in ("ferry_inference_target_batch_size", "ferry_inference_pending_request_count",
                   "ferry_inference_batch_size_bucket", "ferry_inference_batch_size_count"):
        assert family in names, family
    models = {ls.get("model") for n, ls, _ in samples if n == "ferry_inference_target_batch_size"}
    assert {"echo", "wordfilter", "mlp"} <= models


def test_success_counters_increase(ferry):
    before = scrape(ferry)
    n, rows_each = 5, 3
    for i in range(n):
        r = echo(ferry, [f"m{i}-{j}" for j in range(rows_each)])
        assert r.status_code == 200, r.text
    base = total(before, "ferry_inference_request_success", model="echo")
    after = scrape_until(
        ferry, lambda s: total(s, "ferry_inference_request_success", model="echo") >= base + n)

    def delta(name):
        return total(after, name, model="echo") - total(before, name, model="echo")

    assert delta("ferry_inference_request_success") == n
    assert delta("ferry_inference_count") == n * rows_each  # inferences count rows
    # One client sending one request at a time: every request is a batch of its own.
    assert delta("ferry_inference_exec_count") == n
    assert delta("ferry_inference_request_duration_us") > 0
    assert delta("ferry_inference_batch_size_count") == n
    # The batch size histogram counts rows (batch units), not requests.
    assert delta("ferry_inference_batch_size_sum") == n * rows_each
    assert delta("ferry_inference_request_latency_us_count") == n
    assert total(after, "ferry_inference_pending_request_count", model="echo") == 0


def test_failure_counter_has_reason(ferry):
    def failures(samples, **labels):
        return total(samples, "ferry_inference_request_failure", **labels)

    before = scrape(ferry)
    # A request the model rejects (wrong shape) ...
    bad = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32",
                       "data": [1, 2, 3]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/echo-fp32/infer", json=bad, timeout=20)
    assert r.status_code == 400
    # ... and a burst that overflows `slow`'s queue (429s).
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["m"]}]}
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(
            lambda _: requests.post(f"{ferry.http_url}/v2/models/slow/infer", json=body,
                                    timeout=30).status_code, range(10)))
    assert 429 in codes, codes
    shed = codes.count(429)

    after = scrape_until(
        ferry, lambda s: failures(s, model="slow") >= failures(before, model="slow") + shed)

    def delta(**labels):
        return failures(after, **labels) - failures(before, **labels)

    # Every failure carries one of the documented reasons (docs/operations.md).
    reasons = {ls["reason"] for n, ls, _ in after if n == "ferry_inference_request_failure"}
    assert reasons == {"invalid", "overload", "timeout", "unavailable", "internal"}, reasons
    # A 429 is an overload, and nothing else failed on `slow`.
    assert delta(model="slow", reason="overload") == shed
    assert delta(model="slow") == shed


def test_metrics_with_curl(ferry):
    code, body = curl(f"{ferry.http_url}/metrics")
    assert code == 200
    text = body.decode()
    assert "ferry_inference_request_success" in text
    assert 'model="echo"' in text


def test_invalid_input_counted(ferry):
    """The front ends refuse inputs that do not match the signature before the function sees
    them; the refusal still counts once as reason="invalid" on that function."""
    def invalid(samples):
        return total(samples, "ferry_inference_request_failure", model="echo-fp32",
                     reason="invalid")

    before = scrape(ferry)
    bad = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32",
                       "data": [1, 2, 3]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/echo-fp32/infer", json=bad, timeout=20)
    assert r.status_code == 400
    after = scrape_until(ferry, lambda s: invalid(s) > invalid(before), timeout_s=1.0)
    assert invalid(after) - invalid(before) == 1

    # The same over gRPC (INVALID_ARGUMENT).
    client = grpcclient.InferenceServerClient(ferry.grpc_hostport)
    try:
        t = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
        t.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
        with pytest.raises(InferenceServerException) as e:
            client.infer("echo-fp32", [t], client_timeout=20.0)
        assert "INVALID_ARGUMENT" in str(e.value.status())
    finally:
        client.close()
    final = scrape_until(ferry, lambda s: invalid(s) > invalid(after), timeout_s=1.0)
    assert invalid(final) - invalid(after) == 1

    # And a Clipper predict body that is not JSON.
    r = requests.post(f"{ferry.http_url}/echo-fp32/predict", data=b"{not json", timeout=20,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    clipper = scrape_until(ferry, lambda s: invalid(s) > invalid(final), timeout_s=1.0)
    assert invalid(clipper) - invalid(final) == 1

    # A request for an unknown function is not counted on any function.
    r = requests.post(f"{ferry.http_url}/v2/models/no-such-model/infer", json=bad, timeout=20)
    assert r.status_code == 404
    assert total(scrape(ferry), "ferry_inference_request_failure", model="no-such-model") == 0
