"""Prometheus metrics at GET /metrics move with the requests the agent serves and refuses."""

import concurrent.futures
import time

import requests

from e2e_util import curl, parse_metrics


def scrape(ferry):
    r = requests.get(f"{ferry.http_url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain")
    return parse_metrics(r.text)


def total(samples, name, **labels):
    """Sum over samples named `name` (or `name_total`, as newer exposition writes counters)
    whose labels include `labels`."""
    return sum(v for n, ls, v in samples
               if n in (name, name + "_total")
               and all(ls.get(k) == val for k, val in labels.items()))


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
        assert family in names or family + "_total" in names, family
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
    assert 1 <= delta("ferry_inference_exec_count") <= n    # batches; requests may share one
    assert delta("ferry_inference_request_duration_us") > 0
    assert 1 <= delta("ferry_inference_batch_size_count") <= n
    # Batch size counts rows or requests; either way it lies between these.
    assert n <= delta("ferry_inference_batch_size_sum") <= n * rows_each
    assert total(after, "ferry_inference_pending_request_count", model="echo") == 0


def test_failure_counter_has_reason(ferry):
    def failures(samples):
        return sum(v for n, ls, v in samples
                   if n in ("ferry_inference_request_failure",
                            "ferry_inference_request_failure_total") and ls.get("reason"))

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

    after = scrape_until(ferry, lambda s: failures(s) >= failures(before) + shed)
    assert failures(after) - failures(before) >= shed
    slow_reasons = {ls["reason"] for n, ls, v in after
                    if n.startswith("ferry_inference_request_failure") and
                    ls.get("model") == "slow" and ls.get("reason") and v > 0}
    assert slow_reasons, "no failure{model=\"slow\",reason=...} after 429s"


def test_metrics_with_curl(ferry):
    code, body = curl(f"{ferry.http_url}/metrics")
    assert code == 200
    text = body.decode()
    assert "ferry_inference_request_success" in text
    assert 'model="echo"' in text
