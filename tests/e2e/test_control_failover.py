"""ferry-control with two ferry-agent processes on loopback: placement by hardware (one agent
advertises a GPU through the test-only flag), failover when an agent is killed or stops
heartbeating, and a control-plane kill -9 that loses nothing while agents keep serving.

The control API is called with Python gRPC and message classes that protoc generates from
sdk/proto/ferry_control.proto at test time (no ferry client needed).
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from agentproc import REPO_ROOT

ECHO_CPU = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo-cpu}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 0.5, memoryMiB: 64}
  scaling: {minReplicas: 1, maxReplicas: 1}
  slo: {file: echo.slo.yaml}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
"""
ECHO_SLO = """\
apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: echo}
spec:
  latency: {percentile: 99, targetMillis: 50}
"""
ECHO_GPU = """\
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo-gpu}
spec:
  runtime: echo
  hardware: {accelerator: gpu, gpuMemoryMiB: 1024, minComputeCapability: "8.0", cpuCores: 0.5,
             memoryMiB: 64}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
"""


def build_dir():
    d = pathlib.Path(os.environ.get("FERRY_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO_ROOT / d


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """The ferry.control.v1 message classes, generated with protoc."""
    out = tmp_path_factory.mktemp("proto")
    subprocess.run(["protoc", f"-I{REPO_ROOT / 'sdk/proto'}", f"--python_out={out}",
                    str(REPO_ROOT / "sdk/proto/ferry_control.proto")], check=True)
    sys.path.insert(0, str(out))
    import ferry_control_pb2  # noqa: E402
    return ferry_control_pb2


def wait_for(cond, timeout_s, what):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def log_match(path, pattern, timeout_s=20):
    regex = re.compile(pattern)

    def find():
        text = pathlib.Path(path).read_text(errors="replace") if pathlib.Path(path).exists() else ""
        return regex.search(text)
    return wait_for(find, timeout_s, f"/{pattern}/ in {path}")


class Cluster:
    """ferry-control plus agents as child processes; their logs under `tmp`."""

    def __init__(self, tmp, pb, token=None):
        self.tmp, self.pb, self.token = tmp, pb, token
        self.state = tmp / "state"
        self.control = None
        self.control_addr = None
        self.agents = {}

    def start_control(self, port=0):
        args = [str(build_dir() / "control-plane/ferry-control"), "--listen", f"127.0.0.1:{port}",
                "--state", str(self.state)]
        if self.token:
            (self.tmp / "token").write_text(self.token + "\n")
            args += ["--admin-token-file", str(self.tmp / "token")]
        log = self.tmp / f"control-{time.monotonic_ns()}.log"
        self.control = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        m = log_match(log, r"listening on (\S+) ")
        self.control_addr = m.group(1)
        self.channel = grpc.insecure_channel(self.control_addr)

    def start_agent(self, name, extra=(), env=None):
        log = self.tmp / f"agent-{name}.log"
        args = [str(build_dir() / "node-agent/ferry-agent"), "--control", self.control_addr,
                "--node-name", name, "--http-port", "0", "--grpc-port", "0", *extra]
        proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        log_match(log, r"registered with the control plane")
        http = log_match(log, r"listening http=(\S+) ").group(1)
        self.agents[name] = (proc, http)
        return proc

    def call(self, method, request, response_cls, token="default"):
        token = self.token if token == "default" else token
        fn = self.channel.unary_unary(f"/ferry.control.v1.ControlPlane/{method}",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_cls.FromString)
        md = [("authorization", f"Bearer {token}")] if token else None
        return fn(request, metadata=md, timeout=10)

    def apply(self, files, **kw):
        req = self.pb.ApplyRequest(files=[self.pb.ManifestFile(path=str(p), content=c)
                                          for p, c in files])
        return self.call("Apply", req, self.pb.ApplyResponse, **kw)

    def routes(self, function=""):
        return self.call("GetRoutes", self.pb.GetRoutesRequest(function=function),
                         self.pb.GetRoutesResponse).routes

    def ready_route(self, function, node=None):
        for r in self.routes(function):
            if r.ready and (node is None or r.node_id == node):
                return r
        return None

    def stop(self):
        for proc, _ in self.agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        if self.control and self.control.poll() is None:
            self.control.terminate()
        for proc in [p for p, _ in self.agents.values()] + [self.control]:
            if proc:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def infer(http_address, function, text="hi"):
    body = (b'{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"BYTES","data":["' +
            text.encode() + b'"]}]}')
    req = urllib.request.Request(f"http://{http_address}/v2/models/{function}/infer", data=body,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture
def cluster(tmp_path, pb):
    c = Cluster(tmp_path, pb)
    c.start_control()
    c.start_agent("cpu-node", ["--price-per-hour", "0.1"])
    c.start_agent("gpu-node", ["--price-per-hour", "4", "--testonly-fake-gpu=H200:141GiB:9.0"],
                  env={"FERRY_TESTONLY": "1"})
    man = tmp_path / "manifests"
    man.mkdir()
    c.files = [(man / "echo-cpu.yaml", ECHO_CPU), (man / "echo.slo.yaml", ECHO_SLO),
               (man / "echo-gpu.yaml", ECHO_GPU)]
    yield c
    c.stop()


def test_fake_gpu_flag_is_refused_outside_tests(tmp_path, pb):
    env = {k: v for k, v in os.environ.items() if k != "FERRY_TESTONLY"}
    out = subprocess.run([str(build_dir() / "node-agent/ferry-agent"), "--control",
                          "127.0.0.1:1", "--http-port", "0", "--grpc-port", "-1",
                          "--testonly-fake-gpu=H200:141GiB:9.0"],
                         env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "FERRY_TESTONLY=1" in out.stderr


def test_placement_by_hardware_and_cost(cluster):
    resp = cluster.apply(cluster.files)
    assert sorted(c.name for c in resp.changes) == ["echo-cpu", "echo-gpu"]
    gpu = wait_for(lambda: cluster.ready_route("echo-gpu"), 10, "echo-gpu ready")
    cpu = wait_for(lambda: cluster.ready_route("echo-cpu"), 10, "echo-cpu ready")
    assert gpu.node_id == "gpu-node"          # the only node with a GPU
    assert cpu.node_id == "cpu-node"          # the cheaper node for a CPU function
    assert '"data":["hi"]' in infer(gpu.http_address, "echo-gpu")
    assert '"data":["hi"]' in infer(cpu.http_address, "echo-cpu")
    st = cluster.call("GetFunction", cluster.pb.GetFunctionRequest(name="echo-gpu"),
                      cluster.pb.FunctionStatus)
    assert st.replicas[0].hardware_kind == "H200" and st.replicas[0].device_index == 0


def test_bad_manifest_names_file_and_field_and_changes_nothing(cluster):
    cluster.apply(cluster.files)
    bad = ECHO_CPU.replace("minReplicas: 1", "minReplicas: -3")
    with pytest.raises(grpc.RpcError) as err:
        cluster.apply([(cluster.files[0][0], bad)] + cluster.files[1:])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "echo-cpu.yaml" in err.value.details()
    assert "spec.scaling.minReplicas" in err.value.details()
    st = cluster.call("GetFunction", cluster.pb.GetFunctionRequest(name="echo-cpu"),
                      cluster.pb.FunctionStatus)
    assert st.min_replicas == 1 and st.generation == 1


def test_killed_agent_replicas_move_within_lease(cluster):
    cluster.apply(cluster.files)
    wait_for(lambda: cluster.ready_route("echo-cpu", "cpu-node"), 10, "echo-cpu on cpu-node")
    proc, _ = cluster.agents["cpu-node"]
    t0 = time.monotonic()
    proc.kill()  # SIGKILL
    moved = wait_for(lambda: cluster.ready_route("echo-cpu", "gpu-node"), 5, "echo-cpu moved")
    elapsed = time.monotonic() - t0
    assert elapsed <= 2.5, f"routes updated {elapsed:.2f} s after kill -9"
    assert '"data":["hi"]' in infer(moved.http_address, "echo-cpu")
    assert all(r.node_id != "cpu-node" for r in cluster.routes())


def test_silent_agent_loses_its_lease(cluster):
    cluster.apply(cluster.files)
    wait_for(lambda: cluster.ready_route("echo-cpu", "cpu-node"), 10, "echo-cpu on cpu-node")
    proc, _ = cluster.agents["cpu-node"]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGSTOP)  # alive, connected, silent
    try:
        wait_for(lambda: cluster.ready_route("echo-cpu", "gpu-node"), 6, "echo-cpu moved")
        elapsed = time.monotonic() - t0
        # The 2 s lease runs from the agent's last heartbeat, which may precede SIGSTOP by up to
        # one heartbeat interval (500 ms): moving earlier than that would be a premature expiry.
        assert 1.5 <= elapsed <= 3.5, f"moved {elapsed:.2f} s after the agent went silent"
        nodes = cluster.call("ListNodes", cluster.pb.ListNodesRequest(),
                             cluster.pb.ListNodesResponse).nodes
        lease = {n.name: n.lease_state for n in nodes}
        assert lease["cpu-node"] == cluster.pb.LEASE_STATE_LOST
    finally:
        proc.send_signal(signal.SIGCONT)


def test_control_plane_kill_loses_nothing_and_agents_keep_serving(cluster):
    cluster.apply(cluster.files)
    before = {f: wait_for(lambda f=f: cluster.ready_route(f), 10, f"{f} ready")
              for f in ("echo-cpu", "echo-gpu")}
    port = cluster.control_addr.rsplit(":", 1)[1]
    cluster.control.kill()  # SIGKILL
    cluster.control.wait()
    # Direct requests keep working while the control plane is down.
    for _ in range(20):
        for f, r in before.items():
            assert '"data":["hi"]' in infer(r.http_address, f)
    cluster.start_control(port=int(port))
    # Nothing applied is lost, and the agents' running replicas are adopted (same ids).
    after = {f: wait_for(lambda f=f: cluster.ready_route(f), 10, f"{f} ready again")
             for f in before}
    for f in before:
        assert after[f].replica_id == before[f].replica_id
        assert after[f].node_id == before[f].node_id


def test_admin_token_required(tmp_path, pb):
    c = Cluster(tmp_path, pb, token="s3cret")
    try:
        c.start_control()
        files = [(tmp_path / "echo-gpu.yaml", ECHO_GPU)]
        for token in (None, "wrong"):
            with pytest.raises(grpc.RpcError) as err:
                c.apply(files, token=token)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(c.call("ListFunctions", pb.ListFunctionsRequest(),
                          pb.ListFunctionsResponse).functions) == 0
        c.apply(files)
        assert len(c.call("ListFunctions", pb.ListFunctionsRequest(),
                          pb.ListFunctionsResponse).functions) == 1
    finally:
        c.stop()
