"""Starting and stopping a ferry-agent process for end-to-end tests.

The agent prints `ferry-agent: listening http=HOST:PORT grpc=HOST:PORT` and then
`ferry-agent: ready` on stderr. Its output goes to a log file (not a pipe) so that a chatty agent
can never block on a full pipe while a test is not reading.
"""

import os
import pathlib
import re
import signal
import subprocess
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LISTENING_RE = re.compile(r"ferry-agent: listening http=(\S+):(\d+) grpc=(\S+):(\d+)")
READY_LINE = "ferry-agent: ready"


def agent_binary():
    """Path of ferry-agent under $FERRY_BUILD_DIR (default "build", relative to the repo)."""
    build_dir = pathlib.Path(os.environ.get("FERRY_BUILD_DIR", "build"))
    if not build_dir.is_absolute():
        build_dir = REPO_ROOT / build_dir
    return build_dir / "node-agent" / "ferry-agent"


class AgentProcess:
    """One ferry-agent child process on ephemeral loopback ports."""

    def __init__(self, manifests, log_path, max_body_bytes=1 << 20, extra_args=(), binary=None,
                 prefix=(), preexec_fn=None):
        """`binary` overrides $FERRY_BUILD_DIR's agent; `prefix` wraps the command (the benchmark
        passes `taskset -c CPUS`, which execs, so the PID stays the agent's); `preexec_fn` runs
        in the child before exec (e.g. to lower its resource limits)."""
        self.binary = pathlib.Path(binary) if binary else agent_binary()
        if not self.binary.exists():
            raise FileNotFoundError(
                f"{self.binary} not found: build it first (cmake --build BUILD --target ferry-agent)"
                " or set FERRY_BUILD_DIR")
        self.log_path = pathlib.Path(log_path)
        self.args = [
            *prefix, str(self.binary), "--manifests", str(manifests), "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--max-body-bytes", str(max_body_bytes),
            *extra_args
        ]
        self.preexec_fn = preexec_fn
        self.proc = None
        self.http_port = None
        self.grpc_port = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout_s=30.0):
        """Waits for the listening and ready lines; raises RuntimeError with the log if the
        agent exits or does not become ready in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log()
            if self.http_port is None:
                m = LISTENING_RE.search(text)
                if m:
                    self.http_port = int(m.group(2))
                    self.grpc_port = int(m.group(4))
            if self.http_port is not None and READY_LINE in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferry-agent exited with code {self.proc.returncode} before "
                                   f"becoming ready; its output:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"ferry-agent not ready after {timeout_s} s; its output:\n{self.log()}")

    def terminate(self, timeout_s=15.0):
        """Sends SIGTERM and returns the exit code; kills (and returns None) past the bound."""
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
        self._log.close()
        return code

    # --- addresses ---------------------------------------------------------------------------

    @property
    def http_hostport(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_hostport(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"
