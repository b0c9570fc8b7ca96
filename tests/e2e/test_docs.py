"""The documentation is executed: every fenced block in README.md and docs/*.md runs against a
real ferry, or says why it cannot.

Markers (an HTML comment on the last non-blank line before the opening fence; documented in
docs/operations.md, "Documentation checks"):

  <!-- run -->            run the block: sh/bash through bash, console ("$ " commands followed by
                          their output) through bash with the output compared, python through
                          the test's Python, yaml/json applied with `ferry apply -f`.
  <!-- run: needs=X -->  the same, skipped (and reported) when X is absent: `minilm` (the
                          model folder models/all-MiniLM-L6-v2), `gpu` (nvidia-smi works).
  <!-- output -->         the stdout (and stderr) of the previous run block; compared.
  <!-- file: PATH -->     the block is written to PATH in the page's working folder (later
                          blocks use it).
  <!-- norun: REASON -->  not run; REASON must say why (at least three words).

Blocks of one page run in order, in one working folder (with examples/, build/, docs/, models/
linked from the checkout) and one shell environment (variables and the current folder carry
from one sh block to the next). The documented ports are replaced by the test's: 8000 (the
gateway), 8001 (the agent's gRPC), 8080 (the agent's HTTP) and 7070 (the control plane).

Expected output is compared line by line after collapsing whitespace; `...` matches anything
(within a line or across lines when alone on its line).

Besides the examples, this file checks that the flag tables of docs/operations.md match each
binary's --help (names and defaults), that every metric the docs name is on a live /metrics
page and every metric on those pages is documented, that docs/architecture.md names only files
that exist and flags that the binaries take, and that the systemd units under deploy/ start the
binaries with flags they accept.
"""

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from agentproc import REPO_ROOT
from controlproc import ControlAgent, ControlProcess, binary, build_dir, run_ferry, wait_for

DOCS = [REPO_ROOT / "README.md"] + sorted(
    p for p in (REPO_ROOT / "docs").glob("*.md") if p.name != "perf.md")
# docs/perf.md is a record of measurements (its commands need minutes of load, wrk or a GPU):
# neither run nor checked for markers.

MARKER_RE = re.compile(r"^<!--\s*(run|output|file|norun)\s*(?::\s*(.*?))?\s*-->\s*$")
FENCE_RE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
PORT_RE = re.compile(r"\b(localhost|127\.0\.0\.1):(8000|8001|8080|7070)\b")
BLOCK_TIMEOUT_S = 60


@dataclasses.dataclass
class Block:
    path: pathlib.Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str
    kind: str          # run | output | file | norun | "" (unmarked)
    arg: str

    def where(self):
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def parse_blocks(path):
    """Every fenced block of a Markdown file with its marker."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # closing fence
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        kind, arg = "", ""
        if j >= 0:
            mm = MARKER_RE.match(lines[j].strip())
            if mm:
                kind, arg = mm.group(1), (mm.group(2) or "")
        indent = len(m.group(1))
        text = "\n".join(l[indent:] if l[:indent].isspace() else l for l in body) + "\n"
        blocks.append(Block(path, start + 1, lang, text, kind, arg))
    return blocks


# --- every block is marked -----------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_block_is_marked(path):
    problems = []
    prev = None
    for b in parse_blocks(path):
        if not b.kind:
            problems.append(f"{b.where()}: fenced block without <!-- run -->, <!-- output -->, "
                            "<!-- file: PATH --> or <!-- norun: REASON -->")
        elif b.kind == "norun" and len(b.arg.split()) < 3:
            problems.append(f"{b.where()}: <!-- norun --> needs a reason of a few words")
        elif b.kind == "output" and (prev is None or prev.kind != "run"):
            problems.append(f"{b.where()}: <!-- output --> must follow a <!-- run --> block")
        elif b.kind == "file" and not b.arg:
            problems.append(f"{b.where()}: <!-- file: PATH --> needs a path")
        elif b.kind == "run" and b.lang not in ("sh", "bash", "console", "python", "yaml",
                                                "json"):
            problems.append(f"{b.where()}: cannot run a ```{b.lang} block")
        prev = b
    assert not problems, "\n".join(problems)


# --- a running ferry -----------------------------------------------------------------------------

@dataclasses.dataclass
class Cluster:
    control: ControlProcess
    agent: ControlAgent
    agent_grpc_port: int
    tmp: pathlib.Path
    workdir: pathlib.Path  # looks like the checkout; every page runs here

    def apply_examples(self):
        """`ferry apply -f examples/` from the working folder, as the pages do, so that a
        page's own apply finds nothing changed (paths in manifests resolve the same)."""
        out = subprocess.run([str(binary(*BINARIES["ferry"])), "--control", self.control.address,
                              "apply", "-f", "examples/"], cwd=self.workdir, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr

    def ports(self):
        return {"8000": self.control.http_port, "7070": self.control.grpc_port,
                "8001": self.agent_grpc_port, "8080": self.agent.http_port}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


READY_FUNCTIONS = ("echo", "wordfilter", "mlp", "text-normalize")


def wait_ready(cluster, names=READY_FUNCTIONS, timeout_s=60):
    """Until each named function answers ready through the gateway."""
    def ready():
        for n in names:
            try:
                with urllib.request.urlopen(
                        f"{cluster.control.gateway_url}/v2/models/{n}/ready", timeout=5) as r:
                    if r.status != 200:
                        return False
            except Exception:
                return False
        return True
    wait_for(ready, timeout_s, f"functions {names} ready through the gateway", poll_s=0.1)


def wait_settled(cluster, timeout_s=30):
    """Until every placed replica is ready (or failed) and none is draining (GPU functions stay
    pending here, and minilm fails to load without its model: those are left out), so that one
    page's deletes and applies do not hold resources the next page's functions need."""
    import json

    def settled():
        out = run_ferry(cluster.control.address, "get", "functions", "-o", "json")
        if out.returncode != 0:
            return False
        for f in json.loads(out.stdout).get("functions", []):
            if f["name"] in ("gpu-scale", "minilm"):
                continue
            if f.get("draining_replicas", 0) > 0:
                return False
            for r in f.get("replicas", []):
                if r.get("node_id") and r.get("state") not in ("REPLICA_STATE_READY",
                                                               "REPLICA_STATE_FAILED"):
                    return False
        return True
    wait_for(settled, timeout_s, "every function ready and none draining", poll_s=0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """What `make up` runs: ferry-control with its gateway, one agent (--plugin-dir, the agent's
    ports fixed as the Makefile fixes them, here free ones), the examples applied."""
    if not (REPO_ROOT / "examples" / "models" / "mlp.safetensors").exists():
        subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "make_examples.py")],
                       check=True)
    tmp = tmp_path_factory.mktemp("ferry-docs")
    try:
        control = ControlProcess(tmp / "state", tmp / "control.log").start()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    grpc_port = free_port()
    agent = ControlAgent(control.address, "local", tmp / "agent.log", extra_args=[
        f"--grpc-port={grpc_port}", f"--plugin-dir={build_dir() / 'plugins'}"])
    # `make up` gives the agent no price: keep the CLI output of the docs (prices $0).
    agent.args = [a for a in agent.args if a not in ("--price-per-hour", "0.1")]
    try:
        agent.start()
        c = Cluster(control, agent, grpc_port, tmp, make_workdir(tmp / "work"))
        c.apply_examples()
        wait_ready(c)
        yield c
    finally:
        agent.terminate()
        control.terminate()


def substitute_ports(text, ports):
    return PORT_RE.sub(lambda m: f"127.0.0.1:{ports[m.group(2)]}", text)


def make_workdir(d):
    """A working folder that looks like the checkout to the pages' commands."""
    d.mkdir()
    for name in ("examples", "docs", "sdk", "scripts", "deploy", "kernels", "tests"):
        if (REPO_ROOT / name).exists():
            (d / name).symlink_to(REPO_ROOT / name)
    (d / "build").symlink_to(build_dir())
    models = REPO_ROOT / "models"
    if models.exists():
        (d / "models").symlink_to(models)
    return d


def page_env(cluster, workdir):
    env = dict(os.environ)
    bd = build_dir()
    venv_bin = pathlib.Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bd / "sdk" / "cli"), str(bd / "node-agent"),
                                   str(bd / "control-plane"), str(venv_bin), env["PATH"]])
    env["FERRY_CONTROL"] = cluster.control.address
    env["FERRY_GATEWAY"] = cluster.control.gateway_url
    env["FERRY_DOC_TEST"] = "1"
    env["HOME"] = str(workdir)
    env.pop("FERRY_TOKEN_FILE", None)
    return env


# --- running blocks ------------------------------------------------------------------------------

def expected_matches(expected, actual):
    """`expected` (with `...` wildcards) against `actual`, whitespace collapsed per line."""
    def norm(s):
        return [re.sub(r"\s+", " ", l).strip() for l in s.strip("\n").splitlines()
                if l.strip()]
    parts = []
    for line in norm(expected):
        if line == "...":
            parts.append(r"(?:.*\n)*?")
            continue
        pieces = [re.escape(p) for p in line.split("...")]
        parts.append(".*?".join(pieces).replace(r"\ ", r"\s*") + r"\n")
    pattern = "".join(parts)
    text = "".join(l + "\n" for l in norm(actual))
    return re.fullmatch(pattern, text, re.DOTALL) is not None


def test_expected_output_matching():
    """The comparison the pages rely on: whitespace-insensitive, `...` as a wildcard, and
    otherwise exact."""
    assert expected_matches('{"a":1,"id":"..."}', '{"a":1,"id":"r-42"}\n')
    assert not expected_matches('{"a":1}', '{"a":2}')
    assert expected_matches("NAME  READY\necho 1", "NAME READY\n echo   1 \n")
    assert not expected_matches("echo 1", "echo 1\nwordfilter 1")  # extra lines fail
    assert expected_matches("echo 1\n...", "echo 1\nwordfilter 1\nmlp 0")
    assert expected_matches("...\nmlp 0\n...", "echo 1\nmlp 0\nx")
    assert not expected_matches("...\nmlp 1\n...", "echo 1\nmlp 0\nx")
    assert not expected_matches("[0, 2]", "[0, 1]")


class Session:
    """One page's shell environment: bash blocks share variables and the current folder."""

    def __init__(self, cluster, page):
        self.cluster = cluster
        self.page = page
        self.workdir = cluster.workdir
        self.env = page_env(cluster, self.workdir)
        self.state = self.workdir / f".doc-shell-state-{page.stem}"
        self.state.write_text(f"cd {self.workdir}\n")
        self.ports = cluster.ports()
        self.last_output = None
        self.skipped = []

    def bash(self, script, block):
        """Runs `script` in the page's shell state; returns (exit status, stdout+stderr)."""
        wrapped = (f"set -a\nsource {self.state}\nset +a\n"
                   f"{script}\n__ferry_rc=$?\n"
                   f"{{ export -p; echo cd \"$(pwd)\"; }} > {self.state}.new\n"
                   f"exit $__ferry_rc\n")
        try:
            out = subprocess.run(["bash", "-o", "pipefail", "-c", wrapped], env=self.env,
                                 cwd=self.workdir, capture_output=True, text=True,
                                 timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.where()}: still running after {BLOCK_TIMEOUT_S} s", False)
        new = pathlib.Path(f"{self.state}.new")
        if new.exists():
            # export -p also lists read-only variables bash refuses to re-set; drop those.
            keep = [l for l in new.read_text().splitlines()
                    if not re.match(r"declare -[a-zA-Z]*r", l)]
            self.state.write_text("\n".join(keep) + "\n")
            new.unlink()
        return out.returncode, out.stdout + out.stderr

    def run(self, block):
        text = substitute_ports(block.text, self.ports)
        if block.kind == "file":
            target = self.workdir / block.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            return
        needs = re.findall(r"needs=(\w+)", block.arg)
        for need in needs:
            if need == "minilm" and not (REPO_ROOT / "models" / "all-MiniLM-L6-v2").exists():
                self.skipped.append(f"{block.where()}: needs models/all-MiniLM-L6-v2 "
                                    "(make models)")
                self.last_output = None
                return
            if need == "gpu" and shutil.which("nvidia-smi") is None:
                self.skipped.append(f"{block.where()}: needs a GPU")
                self.last_output = None
                return
        if block.lang in ("sh", "bash"):
            rc, out = self.bash(text, block)
            assert rc == 0, f"{block.where()}: exit status {rc}:\n{text}\n--- output:\n{out}"
            self.last_output = (block, out)
        elif block.lang == "console":
            self.run_console(block, text)
        elif block.lang == "python":
            script = self.workdir / f".block-{block.line}.py"
            script.write_text(text)
            rc, out = self.bash(f"python {script}", block)
            assert rc == 0, f"{block.where()}: exit status {rc}:\n{text}\n--- output:\n{out}"
            self.last_output = (block, out)
        elif block.lang in ("yaml", "json"):
            f = self.workdir / f".block-{block.line}.{block.lang}"
            f.write_text(text)
            rc, out = self.bash(f"ferry apply -f {f}", block)
            assert rc == 0, f"{block.where()}: ferry apply failed:\n{out}"
            self.last_output = (block, out)

    def run_console(self, block, text):
        commands = []  # (command, [expected lines])
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                cmd = line[2:]
                while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd += "\n" + lines[i]
                commands.append((cmd, []))
            elif commands:
                commands[-1][1].append(line)
            else:
                pytest.fail(f"{block.where()}: console block must start with '$ '", False)
            i += 1
        for cmd, expected in commands:
            rc, out = self.bash(cmd, block)
            if any(l.strip() for l in expected):
                assert expected_matches("\n".join(expected), out), (
                    f"{block.where()}: `{cmd}` printed:\n{out}\n--- expected:\n"
                    + "\n".join(expected))
            else:
                assert rc == 0, f"{block.where()}: `{cmd}` exit status {rc}:\n{out}"
        self.last_output = None

    def check_output(self, block):
        assert self.last_output is not None or self.skipped, (
            f"{block.where()}: output block without a run block before it")
        if self.last_output is None:
            return
        ran, out = self.last_output
        assert expected_matches(block.text, out), (
            f"{block.where()}: the block at line {ran.line} printed:\n{out}\n--- expected:\n"
            f"{block.text}")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_doc_examples(cluster, page):
    blocks = parse_blocks(page)
    if not any(b.kind in ("run", "file") for b in blocks):
        pytest.skip(f"{page.name} has no runnable blocks")
    cluster.apply_examples()
    wait_ready(cluster)
    wait_settled(cluster)
    session = Session(cluster, page)
    for b in blocks:
        if b.kind in ("run", "file"):
            session.run(b)
        elif b.kind == "output":
            session.check_output(b)
    for s in session.skipped:
        print("skipped:", s)


# --- flags, metrics, paths -----------------------------------------------------------------------

BINARIES = {
    "ferry-agent": ("node-agent", "ferry-agent"),
    "ferry-control": ("control-plane", "ferry-control"),
    "ferry": ("sdk", "cli", "ferry"),
}

HELP_FLAG_RE = re.compile(r"^\s*--([a-z0-9_]+)\s+\((.*?)\);\s*default:\s*(.*?);?\s*$", re.M)


def help_flags(name):
    """{flag (dashed): default text} from a binary's --help."""
    out = subprocess.run([str(binary(*BINARIES[name])), "--help"], capture_output=True,
                         text=True, timeout=10)
    text = out.stdout + out.stderr
    if name == "ferry":
        return {f: None for f in re.findall(r"^\s+(--[a-z][a-z0-9-]*)", text, re.M)}
    flags = {}
    # absl: "    --name (help text...); default: VALUE;" possibly over several lines.
    # Each entry starts on its own line, 4 spaces in; the help text may wrap and hold parentheses.
    for m in re.finditer(r"^    --([a-z0-9_]+) \((.*?)\);\s+default:\s*(.*?);$", text, re.S | re.M):
        flags["--" + m.group(1).replace("_", "-")] = m.group(3).strip().strip('"')
    return flags


def flag_tables(page):
    """{binary: [(flag, default cell)]} from tables that follow `<!-- flags: BINARY -->`."""
    tables, current = {}, None
    for line in page.read_text().splitlines():
        m = re.match(r"<!--\s*flags:\s*(\S+)\s*-->", line.strip())
        if m:
            current = tables.setdefault(m.group(1), [])
            continue
        if current is None:
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for flag in re.findall(r"`(--[a-z0-9-]+)`", cells[0]):
                current.append((flag, cells[1] if len(cells) > 1 else ""))
        elif line.strip() and current:
            current = None
    return tables


def test_flag_tables_match_help():
    tables = flag_tables(REPO_ROOT / "docs" / "operations.md")
    assert set(tables) == {"ferry-agent", "ferry-control"}, (
        f"docs/operations.md: expected <!-- flags: ferry-agent --> and <!-- flags: "
        f"ferry-control --> tables, got {sorted(tables)}")
    problems = []
    for name, rows in tables.items():
        have = help_flags(name)
        documented = {f for f, _ in rows}
        for flag, default in rows:
            if flag not in have:
                problems.append(f"{name}: {flag} is documented but not in --help")
                continue
            want = have[flag]
            cell = default.strip("`").replace(",", "")
            if want is None:
                continue
            if cell.startswith("("):  # "(none)": no default value
                if want != "":
                    problems.append(f"{name}: {flag} is documented without a default, --help "
                                    f"says {want!r}")
            elif cell != want:
                problems.append(f"{name}: {flag} default is documented as {default!r}, "
                                f"--help says {want!r}")
        for flag in have:
            if flag not in documented and not flag.startswith("--testonly"):
                problems.append(f"{name}: {flag} (from --help) is not documented")
    assert not problems, "\n".join(problems)


def test_architecture_names_real_files_and_flags():
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    problems = []
    for token in set(re.findall(r"`([^`\s]+)`", text)):
        token = token.rstrip(".,:;")
        if re.fullmatch(r"[\w.-]+(/[\w.*{}-]*)+|[\w-]+\.(h|cc|cu|py|md|proto|txt|yaml|sh)",
                        token):
            if token.startswith("ferry/"):
                path = REPO_ROOT / "sdk" / "include" / token
            else:
                path = REPO_ROOT / token
            for p in re.findall(r"\{([^}]*)\}", token):
                path = pathlib.Path(str(path).replace("{" + p + "}", p.split(",")[0]))
            if not (path.exists() or list(REPO_ROOT.glob(token.rstrip("/")))):
                problems.append(f"docs/architecture.md names {token}, which does not exist")
    all_flags = set()
    for name in ("ferry-agent", "ferry-control", "ferry"):
        all_flags |= set(help_flags(name))
    for flag in set(re.findall(r"(--[a-z][a-z0-9-]+)", text)):
        if flag not in all_flags:
            problems.append(f"docs/architecture.md names {flag}, which no binary takes")
    assert not problems, "\n".join(problems)


def documented_metrics():
    """(every metric in a docs table, those that must be on a live page): a row that says
    "present only" documents a family that appears only in some state (a faulted GPU)."""
    names, always = set(), set()
    for page in ("operations.md", "control-plane.md", "batching.md"):
        for line in (REPO_ROOT / "docs" / page).read_text().splitlines():
            if line.startswith("| `ferry_"):
                name = re.match(r"\| `(ferry_[a-z0-9_]+)", line).group(1)
                names.add(name)
                if "present only" not in line:
                    always.add(name)
    return names, always


def metric_families(text):
    fams = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            fams.add(m.group(1))
    return fams


def test_metrics_are_documented_and_exist(cluster):
    # Some traffic so that every per-function family is present.
    subprocess.run(["curl", "-s", f"{cluster.control.gateway_url}/v2/models/echo/infer", "-d",
                    '{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"BYTES",'
                    '"data":["x"]}]}'], check=True, capture_output=True, timeout=20)
    live = set()
    for url in (f"http://127.0.0.1:{cluster.agent.http_port}/metrics",
                f"{cluster.control.gateway_url}/metrics"):
        with urllib.request.urlopen(url, timeout=10) as r:
            live |= metric_families(r.read().decode())
    documented, always = documented_metrics()
    missing = sorted(always - live)
    undocumented = sorted(n for n in live - documented if n.startswith("ferry_"))
    assert not missing, f"documented but not on a live /metrics page: {missing}"
    assert not undocumented, f"on a live /metrics page but not documented: {undocumented}"


def test_systemd_units_start_binaries_with_real_flags():
    units = sorted((REPO_ROOT / "deploy" / "systemd").glob("*.service"))
    assert units, "deploy/systemd/*.service missing"
    for unit in units:
        text = unit.read_text()
        m = re.search(r"^ExecStart=(.*(?:\\\n.*)*)", text, re.M)
        assert m, f"{unit.name}: no ExecStart"
        cmd = m.group(1).replace("\\\n", " ").split()
        prog = pathlib.Path(cmd[0]).name
        assert prog in BINARIES, f"{unit.name}: starts {prog}, not a ferry binary"
        have = help_flags(prog)
        for arg in cmd[1:]:
            if arg.startswith("--"):
                flag = arg.split("=")[0].replace("_", "-")
                assert flag in have, f"{unit.name}: {flag} is not a {prog} flag"
        if shutil.which("systemd-analyze"):
            # verify checks the unit's syntax and that ExecStart's binary exists: point it at
            # the build tree's binary in a copy of the unit.
            tmp_unit = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"docs-test-{unit.name}"
            exe = cmd[0]
            tmp_unit.write_text(text.replace(f"ExecStart={exe}",
                                             f"ExecStart={binary(*BINARIES[prog])}"))
            out = subprocess.run(["systemd-analyze", "verify", str(tmp_unit)],
                                 capture_output=True, text=True, timeout=30)
            tmp_unit.unlink()
            said = [l for l in (out.stdout + out.stderr).splitlines() if tmp_unit.name in l]
            assert out.returncode == 0 and not said, (
                f"{unit.name}: systemd-analyze verify (status {out.returncode}):\n"
                + out.stdout + out.stderr)
