"""Autoscaling end to end on loopback: ferry-control with its gateway and two agents.

- A function with minReplicas 0 and idleSeconds 1 starts with one replica, goes to zero after a
  second without requests (a client calling the agent directly then gets 503, not 404), and a burst of concurrent requests through the gateway is held while
  it scales from zero: every request succeeds.
- An mlp scaled to zero and back comes back on the node that held it, from its weight cache.
- A slow function (echo with delayMicros) scales up under concurrent load and back down under a
  light request loop: the replica removed drains first, and no request of either loop fails.

Windows and idle times are made small in the manifests; every wait polls state with a deadline.
"""

import json
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest

from controlproc import ControlAgent, ControlApi, ControlProcess, control_pb2, run_ferry, wait_for

COLD = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: cold}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 0.25, memoryMiB: 64}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 100}
  scaling: {minReplicas: 0, maxReplicas: 2, idleSeconds: 1, stableWindowSeconds: 1}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
"""

# 20 ms per request, one at a time: about 50 rps per replica, 35 at the 0.7 target.
SLOW = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: slow}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 0.25, memoryMiB: 64}
  batching: {maxBatchSize: 1, maxQueueDelayMicros: 0, maxQueueSize: 1000}
  scaling: {minReplicas: 1, maxReplicas: 2, idleSeconds: 300, stableWindowSeconds: 2,
            panicWindowSeconds: 0.5}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0, delayMicros: 20000}
"""

BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                               "data": ["hi"]}]}).encode()


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.control = ControlProcess(
            tmp / "state", tmp / "control.log",
            extra_args=["--heartbeat-ms", "200", "--lease-ms", "1000",
                        "--autoscale-interval-ms", "100", "--drain-ms", "300",
                        "--gateway-hold-timeout-ms", "15000"]).start()
        self.agents = [ControlAgent(self.control.address, f"node{i}", tmp / f"node{i}.log").start()
                       for i in (1, 2)]
        self.pb = control_pb2(tmp / "pb")
        self.api = ControlApi(self.control.address, self.pb)

    def apply(self, name, text):
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        r = run_ferry(self.control.address, "apply", "-f", path)
        assert r.returncode == 0, r.stderr

    def function(self, name):
        for f in self.api.functions():
            if f.name == name:
                return f
        return None

    def infer(self, name, timeout=20):
        req = urllib.request.Request(f"{self.control.gateway_url}/v2/models/{name}/infer",
                                     data=BODY, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self):
        self.api.close()
        for p in (*self.agents, self.control):
            if p.alive():
                p.terminate()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("autoscale"))
    yield c
    c.stop()


def test_scale_to_zero_then_burst_is_held_and_served(cluster):
    cluster.apply("cold", COLD)
    # Initial scale is one replica.
    wait_for(lambda: (f := cluster.function("cold")) and f.ready_replicas == 1, 15,
             "cold: one ready replica")
    # One second without requests: to zero, with the reason.
    t0 = time.monotonic()
    f = wait_for(lambda: (f := cluster.function("cold")) and f.desired_replicas == 0
                 and len(f.replicas) == 0 and f, 10, "cold: scaled to zero")
    print(f"scaled to zero {time.monotonic() - t0:.2f} s after ready: {f.scale_reason}")
    assert f.scale_reason == "idle 1s: to zero"
    assert not [r for r in cluster.api.routes("cold").routes if r.ready]
    r = run_ferry(cluster.control.address, "get", "functions")
    assert r.returncode == 0, r.stderr
    assert "DESIRED" in r.stdout and "idle 1s: to zero" in r.stdout, r.stdout
    wait_for(lambda: any("unloaded function 'cold'" in a.log() for a in cluster.agents), 10,
             "an agent unloaded cold")
    # A client that called that agent directly learns the function moved (503 with the reason),
    # not that it never existed (404).
    agent = next(a for a in cluster.agents if "unloaded function 'cold'" in a.log())
    req = urllib.request.Request(f"http://{agent.http_hostport}/v2/models/cold/infer", data=BODY,
                                 method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 503, e.value.code
    assert "no longer served on this node" in json.loads(e.value.read())["error"]

    # A burst at zero: every request is held, then served.
    results = []
    lock = threading.Lock()

    def one():
        status, body = cluster.infer("cold")
        with lock:
            results.append((status, body))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    print(f"burst of 24 at zero answered in {elapsed:.3f} s")
    assert len(results) == 24
    bad = [(s, b[:200]) for s, b in results if s != 200]
    assert not bad, bad
    for _, body in results:
        assert json.loads(body)["outputs"][0]["data"] == ["hi"]
    f = cluster.function("cold")
    assert f.desired_replicas >= 1
    assert f.scale_reason.startswith("scale from zero"), f.scale_reason

    # The control plane's /metrics: desired and ready replicas per function, hold counters.
    with urllib.request.urlopen(f"{cluster.control.gateway_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'ferry_function_desired_replicas{function="cold"}' in text
    assert 'ferry_function_ready_replicas{function="cold"}' in text
    held = [ln for ln in text.splitlines() if ln.startswith("ferry_gateway_held_requests_total")]
    assert held and float(held[0].split()[-1]) >= 1, held


def write_mlp(path):
    """A one-layer mlp in safetensors: y = [[1, 2]] x + [0.5] (x: [rows, 2])."""
    header = {"layers.0.weight": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]},
              "layers.0.bias": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + struct.pack("<3f", 1.0, 2.0, 0.5))


def weight_cache_lookups(agent):
    """{"hit": n, "miss": n} from an agent's /metrics."""
    with urllib.request.urlopen(f"http://{agent.http_hostport}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ferry_weight_cache_lookups_total{"):
            out[line.split('result="')[1].split('"')[0]] = float(line.split()[-1])
    return out


def test_an_mlp_scaled_to_zero_comes_back_from_the_weight_cache(cluster):
    model = cluster.tmp / "cold_mlp.safetensors"
    write_mlp(model)
    cluster.apply("cold-mlp", f"""\
apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: cold-mlp}}
spec:
  runtime: mlp
  model: {{uri: "file://{model}"}}
  hardware: {{accelerator: cpu, cpuCores: 0.25, memoryMiB: 64}}
  batching: {{maxBatchSize: 8, maxQueueDelayMicros: 100}}
  scaling: {{minReplicas: 0, maxReplicas: 1, idleSeconds: 1, stableWindowSeconds: 1}}
""")
    wait_for(lambda: (f := cluster.function("cold-mlp")) and f.ready_replicas == 1, 15,
             "cold-mlp: one ready replica")
    wait_for(lambda: (f := cluster.function("cold-mlp")) and f.desired_replicas == 0
             and len(f.replicas) == 0, 10, "cold-mlp: scaled to zero")
    wait_for(lambda: any("unloaded function 'cold-mlp'" in a.log() for a in cluster.agents), 10,
             "an agent unloaded cold-mlp")
    agent = next(a for a in cluster.agents if "unloaded function 'cold-mlp'" in a.log())
    before = weight_cache_lookups(agent)

    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                                   "data": [3.0, 4.0]}]}).encode()
    req = urllib.request.Request(f"{cluster.control.gateway_url}/v2/models/cold-mlp/infer",
                                 data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert json.loads(resp.read())["outputs"][0]["data"] == [11.5]
    # Scaled up from zero on the node that held it (warm affinity): its weights came from that
    # agent's cache, not from the file.
    after = weight_cache_lookups(agent)
    assert after.get("hit", 0) == before.get("hit", 0) + 1, (before, after)
    assert after.get("miss", 0) == before.get("miss", 0), (before, after)


class Loop:
    """Clients that send requests through the gateway until stopped; counts every outcome."""

    def __init__(self, cluster, name, clients, pause_s=0.0):
        self.cluster, self.name, self.pause_s = cluster, name, pause_s
        self.ok = 0
        self.failed = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop_flag.is_set():
            status, body = self.cluster.infer(self.name)
            with self.lock:
                if status == 200:
                    self.ok += 1
                else:
                    self.failed.append((status, body[:200]))
            if self.pause_s:
                time.sleep(self.pause_s)  # pacing the client, not synchronising

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def test_scale_up_under_load_and_down_under_a_request_loop_loses_nothing(cluster):
    cluster.apply("slow", SLOW)
    wait_for(lambda: (f := cluster.function("slow")) and f.ready_replicas == 1
             and any(p.measured for p in f.profiles), 20, "slow: one ready, profiled replica")

    heavy = Loop(cluster, "slow", clients=6)
    try:
        t0 = time.monotonic()
        f = wait_for(lambda: (f := cluster.function("slow")) and f.ready_replicas == 2 and f, 15,
                     "slow: scaled up to two ready replicas")
        print(f"scaled up in {time.monotonic() - t0:.2f} s: {f.scale_reason}")
        assert len({r.node_id for r in f.replicas}) == 2  # spread over both nodes
    finally:
        heavy.stop()
    assert not heavy.failed, heavy.failed[:5]

    logs_before = [len(a.log()) for a in cluster.agents]
    light = Loop(cluster, "slow", clients=1, pause_s=0.05)
    try:
        t0 = time.monotonic()
        saw_draining = []

        def scaled_down():
            f = cluster.function("slow")
            if f.draining_replicas > 0:
                saw_draining.append(True)
            return (f.desired_replicas == 1 and f.ready_replicas == 1 and
                    f.draining_replicas == 0 and len(f.replicas) == 1 and f)

        f = wait_for(scaled_down, 20, "slow: back to one replica")
        print(f"scaled down in {time.monotonic() - t0:.2f} s: {f.scale_reason}")
        assert f.scale_reason.startswith("stable: "), f.scale_reason
        # The removed replica's agent unloaded the function after draining.
        wait_for(lambda: any("unloaded function 'slow'" in a.log()[n:]
                             for a, n in zip(cluster.agents, logs_before)), 10,
                 "an agent unloaded slow")
        ok_at_unload = light.ok
        wait_for(lambda: light.ok >= ok_at_unload + 10, 10, "requests after the scale-down")
    finally:
        light.stop()
    print(f"light loop: {light.ok} ok, {len(light.failed)} failed; draining seen: {bool(saw_draining)}")
    assert not light.failed, light.failed[:5]
    assert light.ok > 10
