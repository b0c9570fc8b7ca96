"""Hostile and broken clients at the socket level: the agent answers what it can, closes what it
cannot parse, never hangs or crashes, and keeps serving everyone else."""

import json
import socket
import time

import requests

from e2e_util import MAX_BODY_BYTES


def hostport(ferry):
    host, port = ferry.http_hostport.rsplit(":", 1)
    return host, int(port)


def exchange(ferry, raw, timeout=5.0):
    """Sends raw bytes on a fresh connection and returns what came back before the agent closed
    the connection or `timeout` passed."""
    with socket.create_connection(hostport(ferry), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def assert_serving(ferry):
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["alive"]}]}
    r = requests.post(f"{ferry.http_url}/v2/models/echo/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["alive"]


def status_of(reply):
    assert reply.startswith(b"HTTP/1."), reply[:200]
    return int(reply.split(b" ", 2)[1])


def test_garbage_instead_of_http(ferry):
    reply = exchange(ferry, b"\x00\xff\xfe not http at all\r\n\r\n")
    # Either a 400 or a closed connection; never a hang (exchange is bounded) or a crash.
    if reply:
        assert status_of(reply) == 400
    assert_serving(ferry)


def test_truncated_body_then_close(ferry):
    head = (b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n")
    reply = exchange(ferry, head + b'{"inputs": [')
    assert reply == b"" or status_of(reply) == 400
    assert_serving(ferry)


def test_declared_body_over_limit_is_refused_before_it_is_sent(ferry):
    head = (f"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {MAX_BODY_BYTES * 4}\r\n\r\n").encode()
    reply = exchange(ferry, head)
    assert status_of(reply) == 413
    assert b"error" in reply
    assert_serving(ferry)


def test_binary_header_longer_than_body(ferry):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    r = requests.post(f"{ferry.http_url}/v2/models/echo/infer", data=header,
                      headers={"Inference-Header-Content-Length": str(len(header) + 100)},
                      timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]


def test_binary_size_mismatch(ferry):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 100}}]}).encode()
    r = requests.post(f"{ferry.http_url}/v2/models/echo/infer", data=header + b"\x03\x00",
                      headers={"Inference-Header-Content-Length": str(len(header))}, timeout=10)
    assert r.status_code == 400
    assert "INPUT0" in r.json()["error"]


def test_deeply_nested_json(ferry):
    body = '{"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ' + \
        "[" * 5000 + "]" * 5000 + "}]}"
    r = requests.post(f"{ferry.http_url}/v2/models/echo/infer", data=body, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]


def test_many_idle_connections_do_not_block_others(ferry):
    idle = [socket.create_connection(hostport(ferry), timeout=5) for _ in range(200)]
    try:
        # Half-sent requests on some of them.
        for s in idle[::2]:
            s.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert_serving(ferry)
    finally:
        for s in idle:
            s.close()
    assert_serving(ferry)


def test_keep_alive_survives_an_error(ferry):
    with requests.Session() as session:
        bad = session.post(f"{ferry.http_url}/v2/models/echo/infer", data="{nope", timeout=10)
        assert bad.status_code == 400
        body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                            "data": ["again"]}]}
        good = session.post(f"{ferry.http_url}/v2/models/echo/infer", json=body, timeout=10)
        assert good.status_code == 200
        assert good.json()["outputs"][0]["data"] == ["again"]
