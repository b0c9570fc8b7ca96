"""Control-plane processes for end-to-end tests: ferry-control (with its gateway), ferry-agent in
--control mode, the `ferry` CLI, and a Python client of the ControlPlane gRPC API.

Like agentproc.py, every child writes to a log file (never a pipe) and the helpers synchronise on
the lines the daemons print or on the API's state, never on fixed sleeps.
"""

import importlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from agentproc import REPO_ROOT

CONTROL_RE = re.compile(r"ferry-control: listening on (\S+):(\d+)")
GATEWAY_RE = re.compile(r"ferry-control: gateway listening on (\S+):(\d+)")
AGENT_RE = re.compile(r"ferry-agent: listening http=(\S+):(\d+) grpc=(\S+):(\d+)")
REGISTERED = "registered with the control plane"


def build_dir():
    d = pathlib.Path(os.environ.get("FERRY_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO_ROOT / d


def binary(*parts):
    path = build_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build it first or set FERRY_BUILD_DIR")
    return path


def wait_for(predicate, timeout_s, what, poll_s=0.02):
    """Polls `predicate` until it returns something truthy; returns it or raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


class _Proc:
    def __init__(self, args, log_path, env=None):
        self.args = [str(a) for a in args]
        self.log_path = pathlib.Path(log_path)
        self.env = env
        self.proc = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env)
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _wait_log(self, pattern, timeout_s, start_at=0):
        def found():
            if not self.alive():
                raise RuntimeError(f"{self.args[0]} exited ({self.proc.returncode}):\n{self.log()}")
            return pattern.search(self.log(), start_at) if hasattr(pattern, "search") else (
                pattern in self.log()[start_at:])
        return wait_for(found, timeout_s, f"{pattern} in {self.log_path}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def terminate(self, timeout_s=15.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        if self._log and not self._log.closed:
            self._log.close()
        return code


class ControlProcess(_Proc):
    """ferry-control with its gateway. Ports 0 pick free ones; restart() reuses the bound ones."""

    def __init__(self, state_dir, log_path, grpc_port=0, http_port=0, token_file=None,
                 extra_args=()):
        self.state_dir = pathlib.Path(state_dir)
        self.token_file = token_file
        self.extra_args = list(extra_args)
        self.grpc_port = grpc_port
        self.http_port = http_port
        super().__init__(self._args(), log_path)

    def _args(self):
        args = [binary("control-plane", "ferry-control"), "--listen",
                f"127.0.0.1:{self.grpc_port}", "--state", self.state_dir, "--http-listen",
                f"127.0.0.1:{self.http_port}", *self.extra_args]
        if self.token_file:
            args += ["--admin-token-file", self.token_file]
        return args

    def start(self, timeout_s=20.0):
        start_at = len(self.log())
        super().start()
        g = self._wait_log(CONTROL_RE, timeout_s, start_at)
        h = self._wait_log(GATEWAY_RE, timeout_s, start_at)
        self.grpc_port = int(g.group(2))
        self.http_port = int(h.group(2))
        return self

    def restart(self, timeout_s=20.0):
        """Starts again on the same ports and state (after kill9 or terminate)."""
        self.args = [str(a) for a in self._args()]
        return self.start(timeout_s)

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def gateway_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def gateway_hostport(self):
        return f"127.0.0.1:{self.http_port}"


class ControlAgent(_Proc):
    """ferry-agent --control. fake_gpu (e.g. "H200:141GiB:9.0") uses the test-only flag."""

    def __init__(self, control_address, node_name, log_path, fake_gpu=None, extra_args=()):
        args = [binary("node-agent", "ferry-agent"), "--control", control_address, "--host",
                "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--node-name", node_name,
                "--price-per-hour", "0.1", *extra_args]
        env = dict(os.environ)
        if fake_gpu:
            args.append(f"--testonly-fake-gpu={fake_gpu}")
            env["FERRY_TESTONLY"] = "1"
        super().__init__(args, log_path, env)
        self.node_name = node_name
        self.http_port = None

    def start(self, timeout_s=20.0):
        super().start()
        m = self._wait_log(AGENT_RE, timeout_s)
        self.http_port = int(m.group(2))
        self._wait_log(REGISTERED, timeout_s)
        return self

    @property
    def http_hostport(self):
        return f"127.0.0.1:{self.http_port}"


def run_ferry(control, *args, token_file=None, gateway=None, timeout_s=30):
    """Runs the `ferry` CLI; returns CompletedProcess (text)."""
    cmd = [str(binary("sdk", "cli", "ferry")), "--control", control]
    if token_file:
        cmd += ["--token-file", str(token_file)]
    if gateway:
        cmd += ["--gateway", gateway]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def control_pb2(tmp_dir):
    """Generates and imports ferry_control_pb2 (protoc into tmp_dir)."""
    tmp_dir = pathlib.Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    if not (tmp_dir / "ferry_control_pb2.py").exists():
        subprocess.run(["protoc", f"-I{REPO_ROOT / 'sdk' / 'proto'}", f"--python_out={tmp_dir}",
                        str(REPO_ROOT / "sdk" / "proto" / "ferry_control.proto")], check=True)
    if str(tmp_dir) not in sys.path:
        sys.path.insert(0, str(tmp_dir))
    return importlib.import_module("ferry_control_pb2")


class ControlApi:
    """Minimal Python client of ferry.control.v1.ControlPlane (unary calls only)."""

    def __init__(self, address, pb, token=None):
        import grpc
        self.pb = pb
        self.channel = grpc.insecure_channel(address)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def _call(self, method, request, response_type, timeout=5):
        fn = self.channel.unary_unary(f"/ferry.control.v1.ControlPlane/{method}",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_type.FromString)
        return fn(request, timeout=timeout, metadata=self.metadata)

    def routes(self, function=""):
        return self._call("GetRoutes", self.pb.GetRoutesRequest(function=function),
                          self.pb.GetRoutesResponse)

    def functions(self):
        return self._call("ListFunctions", self.pb.ListFunctionsRequest(),
                          self.pb.ListFunctionsResponse).functions

    def nodes(self):
        return self._call("ListNodes", self.pb.ListNodesRequest(), self.pb.ListNodesResponse).nodes

    def close(self):
        self.channel.close()
