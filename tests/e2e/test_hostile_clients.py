"""Hostile clients at the connection level: idle and slow clients are cut off by the HTTP
server's per-phase timeouts, descriptors and request bytes are bounded, big bodies do not cost
memory out of proportion or stall other clients, and shutdown ends even when a client never reads
its response or a second SIGTERM arrives. Each case asserts the answer and that the agent keeps
serving afterwards.

These agents run with short timeouts (flags) so that the cases take seconds."""

import concurrent.futures
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
import numpy as np

from agentproc import AgentProcess

MANIFEST_DIR = pathlib.Path(__file__).resolve().parent / "manifests"

SHORT_TIMEOUTS = [
    "--http-header-timeout-seconds", "1", "--http-body-timeout-seconds", "1",
    "--http-idle-timeout-seconds", "2", "--http-write-timeout-seconds", "5",
]

SLOW_ECHO = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: {name}}}
spec:
  runtime: echo
  config: {{delayMicros: {delay_us}}}
  batching: {{maxBatchSize: {batch}, maxQueueSize: 64, instances: 1, maxQueueDelayMicros: 0,
             policy: fixed}}
"""


def start_agent(tmp_path, name, extra_args=(), max_body_bytes=1 << 20, slow=None,
                preexec_fn=None):
    """An agent serving echo and echo-fp32 (and, if `slow` = (delay_us, batch), a slow echo
    called "slow"), with its own folder under tmp_path."""
    folder = tmp_path / name
    manifests = folder / "manifests"
    manifests.mkdir(parents=True)
    for f in ("echo.yaml", "echo_fp32.yaml"):
        shutil.copy(MANIFEST_DIR / f, manifests / f)
    if slow is not None:
        (manifests / "slow.yaml").write_text(
            SLOW_ECHO.format(name="slow", delay_us=slow[0], batch=slow[1]))
    try:
        agent = AgentProcess(manifests, folder / "agent.log", max_body_bytes=max_body_bytes,
                             extra_args=list(extra_args), preexec_fn=preexec_fn)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    agent.start()
    try:
        agent.wait_ready(timeout_s=30.0)
    except RuntimeError as e:
        agent.terminate(timeout_s=5.0)
        pytest.fail(str(e), pytrace=False)
    return agent


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One agent with short timeouts and a 64 MiB body limit, shared by the cases that leave it
    running."""
    agent = start_agent(tmp_path_factory.mktemp("hostile"), "agent", SHORT_TIMEOUTS,
                        max_body_bytes=64 << 20)
    yield agent
    code = agent.terminate(timeout_s=15.0)
    assert code == 0, f"exit code {code}; log:\n{agent.log()}"


# --- helpers ---------------------------------------------------------------------------------


def addr(agent):
    return ("127.0.0.1", agent.http_port)


def echo_body(text):
    return {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def assert_serving(agent):
    r = requests.get(f"{agent.http_url}/v2/health/live", timeout=5)
    assert r.status_code == 200
    r = requests.post(f"{agent.http_url}/v2/models/echo/infer", json=echo_body("alive"),
                      timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["alive"]


def proc_status(pid):
    """{field: value in kB} for the Vm* lines of /proc/PID/status."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_within(sock, seconds):
    """Seconds until the peer closed `sock` (recv sees EOF or a reset), or None."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return time.monotonic() - started
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - started
    except socket.timeout:
        return None


def raise_own_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def pending_requests(agent):
    text = requests.get(f"{agent.http_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ferry_inference_pending_request_count"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- cases -----------------------------------------------------------------------------------


def test_thousand_idle_connections_do_not_delay_a_client(hostile):
    raise_own_fd_limit(1200)
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(addr(hostile), timeout=5))
        started = time.monotonic()
        r = requests.post(f"{hostile.http_url}/v2/models/echo/infer", json=echo_body("hi"),
                          timeout=5)
        elapsed = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert elapsed < 1.0, f"served in {elapsed:.2f} s with 1,000 idle connections open"
        # They never sent a header: the header limit (1 s from the accept) closes them.
        assert closed_within(idle[0], 5.0) is not None
        assert closed_within(idle[-1], 5.0) is not None
    finally:
        for s in idle:
            s.close()
    assert_serving(hostile)


def test_slowloris_header_is_cut_off(hostile):
    with socket.create_connection(addr(hostile), timeout=5) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        # One header byte every 0.2 s: progress, but the header never completes.
        while time.monotonic() - started < 5.0:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
        elapsed = time.monotonic() - started
        assert closed, "a header trickled byte by byte was never cut off"
        assert 0.7 < elapsed < 3.0, elapsed
    assert_serving(hostile)


def test_stalled_body_is_cut_off_and_its_memory_released(hostile):
    pid = hostile.proc.pid
    assert_serving(hostile)
    baseline_kb = proc_status(pid)["VmRSS"]
    declared, sent = 48 << 20, 40 << 20
    with socket.create_connection(addr(hostile), timeout=5) as s:
        s.sendall((f"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
                   ).encode())
        s.sendall(b"x" * sent)
        # The agent holds what it read ...
        deadline = time.monotonic() + 5
        while proc_status(pid)["VmRSS"] - baseline_kb < 30 << 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        held_kb = proc_status(pid)["VmRSS"] - baseline_kb
        assert held_kb >= 30 << 10, f"agent holds only {held_kb} kB of a 40 MiB partial body"
        # ... until the body makes no progress for 1 s.
        assert closed_within(s, 5.0) is not None, "stalled body never cut off"
    deadline = time.monotonic() + 5
    while proc_status(pid)["VmRSS"] - baseline_kb > 10 << 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    released_kb = proc_status(pid)["VmRSS"] - baseline_kb
    assert released_kb < 10 << 10, f"{released_kb} kB still held after the cut"
    assert_serving(hostile)


# Probes a URL until SIGTERM, then prints its slowest answer in seconds. A process of its own, so
# that the test building 60 MiB bodies (which holds Python's GIL for long) does not delay it.
HEALTH_PROBE = """
import signal, sys, time, urllib.request
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
worst = 0.0
print("probing", flush=True)
while not stop:
    started = time.monotonic()
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        assert r.status == 200
    worst = max(worst, time.monotonic() - started)
    time.sleep(0.02)
print(worst, flush=True)
"""


@pytest.mark.skipif(os.environ.get("FERRY_SANITIZER") == "thread",
                    reason="ThreadSanitizer multiplies memory and time: the bounds hold only for "
                           "a normal build")
def test_sixty_mib_bodies_cost_bounded_memory_and_do_not_stall_health_checks(hostile):
    pid = hostile.proc.pid
    assert_serving(hostile)
    rows = (60 << 20) // 16  # rows of 4 FP32 numbers: 60 MiB of binary data

    def peak_mib_over_baseline(send):
        """Peak RSS while `send()` runs, over the RSS before it (VmHWM reset first)."""
        baseline_kb = proc_status(pid)["VmRSS"]
        pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
        send()
        return (proc_status(pid)["VmHWM"] - baseline_kb) / 1024

    # Built before the probe starts.
    payload = bytes(rows * 16)
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [rows, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    binary_body, binary_header_length = header + payload, len(header)
    numbers = b"[" + b",".join([b"1.0"] * (rows * 4)) + b"]"
    head = json.dumps({"inputs": [{"name": "INPUT0", "shape": [rows, 4], "datatype": "FP32",
                                   "data": None}]}).encode()
    json_body = head.replace(b"null", numbers)
    payload = b"b" * (60 << 20)
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(payload) + 4}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
                         }).encode()
    bytes_body, bytes_header_length = header + struct.pack("<I", len(payload)) + payload, len(header)
    del payload, numbers

    def binary_over_batch():
        r = requests.post(f"{hostile.http_url}/v2/models/echo-fp32/infer", data=binary_body,
                          headers={"Inference-Header-Content-Length": str(binary_header_length)},
                          timeout=60)
        assert r.status_code == 400, r.text[:300]

    def json_over_batch():
        r = requests.post(f"{hostile.http_url}/v2/models/echo-fp32/infer", data=json_body,
                          timeout=60)
        assert r.status_code == 400, r.text[:300]

    def binary_bytes_echoed():
        r = requests.post(f"{hostile.http_url}/v2/models/echo/infer", data=bytes_body,
                          headers={"Inference-Header-Content-Length": str(bytes_header_length)},
                          timeout=60)
        assert r.status_code == 200, r.text[:300]
        json_length = int(r.headers["Inference-Header-Content-Length"])
        assert len(r.content) - json_length == (60 << 20) + 4

    probe = subprocess.Popen([sys.executable, "-c", HEALTH_PROBE,
                              f"{hostile.http_url}/v2/health/live"], stdout=subprocess.PIPE)
    try:
        assert probe.stdout.readline().strip() == b"probing"
        peaks = {}
        for name, send in [("binary, refused", binary_over_batch),
                           ("JSON numbers, refused", json_over_batch),
                           ("binary BYTES, echoed", binary_bytes_echoed)]:
            peaks[name] = peak_mib_over_baseline(send)
    finally:
        probe.send_signal(signal.SIGTERM)
        out, _ = probe.communicate(timeout=30)
    assert probe.returncode == 0, out
    worst = float(out.split()[-1])
    print("60 MiB bodies, peak RSS over baseline: " +
          ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()) +
          f"; slowest concurrent health check {worst * 1000:.0f} ms")
    # The body itself, and nothing sized by the declared shape.
    assert peaks["binary, refused"] < 200, peaks
    # The JSON document model costs several times the text; still far from a gigabyte.
    assert peaks["JSON numbers, refused"] < 512, peaks
    # Request, decoded input, output and encoded response all exist at some point.
    assert peaks["binary BYTES, echoed"] < 400, peaks
    assert worst < 1.0, f"a health check took {worst:.2f} s during the big bodies"
    assert_serving(hostile)


def test_fd_exhaustion_backs_off_and_recovers(tmp_path):
    limit = 64

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    agent = start_agent(tmp_path, "fds", ["--http-threads", "1"], preexec_fn=low_fd_limit)
    clients = []
    try:
        assert f"open-file limit ({limit})" in agent.log()
        # More connections than the agent has descriptors: the rest wait in the backlog.
        for _ in range(2 * limit):
            clients.append(socket.create_connection(addr(agent), timeout=5))
        time.sleep(0.3)  # let the agent run into EMFILE
        before = cpu_seconds(agent.proc.pid)
        time.sleep(1.0)
        spent = cpu_seconds(agent.proc.pid) - before
        assert spent < 0.3, f"agent burnt {spent:.2f} s of CPU in 1 s while out of descriptors"
        assert agent.proc.poll() is None
    finally:
        for s in clients:
            s.close()
    try:
        # Descriptors come back as those connections close: the agent serves again.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert_serving(agent)
                break
            except (requests.RequestException, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        code = agent.terminate(timeout_s=15)
    assert code == 0, agent.log()


def test_client_that_never_reads_does_not_block_shutdown(tmp_path):
    grace_s = 2
    agent = start_agent(tmp_path, "reader", ["--shutdown-grace-seconds", str(grace_s)])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(addr(agent))
        # Pipelined requests for ~20 MB of responses, more than the socket buffers hold: the
        # agent ends up blocked writing to a client that reads nothing.
        s.setblocking(False)
        requests_bytes = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        try:
            s.send(requests_bytes)
        except BlockingIOError:
            pass
        time.sleep(0.5)  # time to fill the socket buffers; shutdown must end either way
        assert_serving(agent)
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        try:
            code = agent.proc.wait(timeout=grace_s + 5)
        except Exception:
            code = None
        elapsed = time.monotonic() - started
        assert code == 0, f"agent did not exit 0 within grace + 5 s (code {code}):\n{agent.log()}"
        assert elapsed < grace_s + 3, elapsed
    finally:
        s.close()
        agent.terminate(timeout_s=5)


def test_double_sigterm_under_load_answers_every_accepted_request(tmp_path):
    agent = start_agent(tmp_path, "double", slow=(300_000, 4))
    n = 16
    results = [None] * n

    def one(i):
        try:
            r = requests.post(f"{agent.http_url}/v2/models/slow/infer",
                              json=echo_body(f"r{i}"), timeout=30)
            results[i] = (r.status_code, r.json())
        except requests.RequestException as e:
            results[i] = ("error", repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while pending_requests(agent) < n:
            assert time.monotonic() < deadline, "requests never all reached the agent"
            time.sleep(0.01)
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        agent.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        code = agent.proc.wait(timeout=30)
        for i, result in enumerate(results):
            assert result is not None and result[0] == 200, (i, result, agent.log())
            assert result[1]["outputs"][0]["data"] == [f"r{i}"]
        assert code == 0, agent.log()
        assert "again: already stopping" in agent.log()
    finally:
        agent.terminate(timeout_s=5)


def test_bytes_in_flight_budget_refuses_at_once(tmp_path):
    agent = start_agent(tmp_path, "budget", ["--max-inflight-bytes", str(3 << 20)],
                        max_body_bytes=2 << 20, slow=(1_000_000, 1))
    try:
        text = "z" * ((1 << 20) + (400 << 10))  # 1.4 MiB: two fit in 3 MiB, three do not
        body = json.dumps(echo_body(text)).encode()

        def one(_):
            started = time.monotonic()
            try:
                r = requests.post(f"{agent.http_url}/v2/models/slow/infer", data=body,
                                  timeout=30)
                return r.status_code, time.monotonic() - started, r.text[:200]
            except requests.RequestException as e:
                return "error", time.monotonic() - started, repr(e)

        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(one, range(5)))
        codes = sorted(str(r[0]) for r in results)
        assert codes.count("200") >= 1, results
        refused = [r for r in results if r[0] == 429]
        assert refused, f"no request was refused over the budget: {results}"
        for r in refused:
            assert r[1] < 0.9, f"refusal took {r[1]:.2f} s: {r}"
            assert "in flight" in r[2]
        # gRPC shares the budget: while two big HTTP bodies are held, a big message is refused.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = [pool.submit(one, i) for i in range(2)]
            # Both are with the core once it counts them, and hold their bytes until answered.
            deadline = time.monotonic() + 5
            while pending_requests(agent) < 2:
                assert time.monotonic() < deadline, "the two big requests never arrived"
                time.sleep(0.01)
            client = grpcclient.InferenceServerClient(agent.grpc_hostport)
            inp = grpcclient.InferInput("INPUT0", [1], "BYTES")
            inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
            with pytest.raises(InferenceServerException) as e:
                client.infer("slow", [inp])
            assert "RESOURCE_EXHAUSTED" in str(e.value.status()), e.value
            assert [h.result()[0] for h in held] == [200, 200]
        # Everything was given back: a big request fits again.
        r = requests.post(f"{agent.http_url}/v2/models/slow/infer", data=body, timeout=30)
        assert r.status_code == 200, r.text[:200]
        assert_serving(agent)
    finally:
        code = agent.terminate(timeout_s=15)
    assert code == 0, agent.log()
