"""Reference implementations and small helpers shared by the end-to-end tests."""

import re
import subprocess

MAX_BODY_BYTES = 1 << 20  # the agent's --max-body-bytes in these tests: small, so 413 is cheap

WORD_RE = re.compile(r"[A-Za-z0-9]+")
BLACKLIST = ("darn", "heck", "drat", "blasted")  # as in manifests/wordfilter.yaml
MASK = "#"

# Documents chosen so that every reasonable notion of "whole word" agrees: words are separated
# by spaces or punctuation, never by '_', '\'' or '-'.
DOCUMENTS = [
    "you are a darn fool",
    "DARN it, what the Heck!",
    "darned hecklers undrat the drat (blasted) thing",
    "darn darn darn",
    "",
    "nothing to see here",
    "na\u00efve heck caf\u00e9",
    "drat.",
]


def filter_reference(text, blacklist=BLACKLIST, mask=MASK):
    """Returns (filtered, count): blacklisted words (case-insensitive, whole words) replaced by
    runs of `mask` of the same length, and how many were replaced."""
    words = {w.lower() for w in blacklist}
    count = 0

    def repl(m):
        nonlocal count
        if m.group(0).lower() in words:
            count += 1
            return mask * len(m.group(0))
        return m.group(0)

    return WORD_RE.sub(repl, text), count


def as_bytes(value):
    """tritonclient returns BYTES elements as bytes (binary, gRPC) or str (HTTP JSON)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"not a BYTES element: {value!r}")


SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Parses Prometheus text exposition into [(name, {label: value}, float)]."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def metric_sum(samples, name, **labels):
    """Sum of every sample called `name` whose labels include `labels`."""
    return sum(v for n, ls, v in samples
               if n == name and all(ls.get(k) == val for k, val in labels.items()))


def curl(*args, timeout=20):
    """Runs curl; returns (http_code, body). `-w` appends the status on its own line."""
    out = subprocess.run(["curl", "-sS", "--max-time", str(timeout - 5), "-w", "\n%{http_code}",
                          *args], capture_output=True, timeout=timeout, check=True)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body
