#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (seed-* files).

Seeds are the request bodies, messages and files the unit and end-to-end tests use: the
complete JSON bodies quoted in the C++ unit tests, the manifests of examples/ and tests/e2e/,
and hand-written equivalents of the e2e requests for the binary formats. Crash inputs (crash-*)
found by `make fuzz` live in the same folders and are never touched here.

Usage: build/venv/bin/python tests/fuzz/make_seeds.py   (needs tritonclient and numpy)
"""
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


def raw_literals(path):
    """The C++ raw string literals R"(...)" of a source file."""
    return re.findall(r'R"\((.*?)\)"', (ROOT / path).read_text(), re.S)


def json_literals(path):
    out = []
    for text in raw_literals(path):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append((text, value))
    return out


def le32(n):
    return struct.pack("<I", n)


def bytes_elements(items):
    return b"".join(le32(len(b)) + b for b in items)


def kserve_json_seeds():
    n = 0
    for path in ("node-agent/kserve_json_test.cc", "node-agent/http_server_test.cc"):
        for text, value in json_literals(path):
            if "inputs" in value:
                write("fuzz_kserve_json", f"unit-{n:02d}", text)
                n += 1
    e2e = {
        "wordfilter": {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                   "data": ["you are a darn fool", "hello"]}]},
        "echo-fp32": {"id": "r1", "inputs": [{"name": "INPUT0", "shape": [2, 4],
                                             "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}],
                      "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]},
        "mlp": {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                            "data": [[0.5] * 64]}],
                "parameters": {"priority": 1, "timeout": 100000, "binary_data_output": True}},
        "ints": {"inputs": [{"name": "a", "shape": [1, 2, 2], "datatype": "INT32",
                             "data": [1, -2, 3, 2147483647]},
                            {"name": "b", "shape": [1], "datatype": "INT64",
                             "data": [-9223372036854775808]}]},
        "fixed-fp16": {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16",
                                   "parameters": {"binary_data_size": 12}}]},
        "pairs": {"inputs": [{"name": "p", "shape": [2, 2], "datatype": "BYTES",
                              "data": [["a", "b"], ["", "\u00e9"]]}]},
        "bools": {"inputs": [{"name": "f", "shape": [3], "datatype": "BOOL",
                              "data": [True, False, True]}]},
        "empty": {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]},
    }
    for name, body in e2e.items():
        write("fuzz_kserve_json", f"e2e-{name}", json.dumps(body))
    # The hostile requests of the hardening issue: declared sizes far beyond the payload.
    hostile = {
        "huge-shape": {"inputs": [{"name": "x", "shape": [1 << 40], "datatype": "FP32", "data": []}]},
        "overflowing-shape": {"inputs": [{"name": "x", "shape": [1, 1 << 62], "datatype": "FP32",
                                          "data": []}]},
        "huge-bytes-shape": {"inputs": [{"name": "text", "shape": [1 << 40], "datatype": "BYTES",
                                         "data": ["a"]}]},
        "huge-timeout": {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "data": ["a"]}],
                         "parameters": {"timeout": (1 << 63) - 1, "priority": (1 << 63) - 1}},
    }
    for name, body in hostile.items():
        write("fuzz_kserve_json", f"issue-{name}", json.dumps(body))


def kserve_binary_seeds():
    """selector byte, uint32 header length, body (see fuzz_kserve_binary.cc)."""
    def seed(name, selector, header, binary):
        header = header if isinstance(header, bytes) else json.dumps(header).encode()
        write("fuzz_kserve_binary", name, bytes([selector]) + le32(len(header)) + header + binary)

    words = bytes_elements([b"you are a darn fool", b"hello", b""])
    seed("bytes-json+binary", 0x40, {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                                 "parameters": {"binary_data_size": len(words)}}]},
         words)
    x = struct.pack("<64f", *[i / 64 for i in range(64)])
    seed("fp32-json+binary", 0x01, {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                                "parameters": {"binary_data_size": len(x)}}],
                                    "outputs": [{"name": "y", "parameters": {"binary_data": True}}]},
         x)
    a = struct.pack("<4i", 1, 2, 3, 4)
    seed("mixed-binary-and-json", 0x02,
         {"inputs": [{"name": "a", "shape": [1, 2, 2], "datatype": "INT32",
                      "parameters": {"binary_data_size": len(a)}},
                     {"name": "b", "shape": [1], "datatype": "INT64", "data": [7]}]}, a)
    # Header length 0: the whole body is the model's single input.
    write("fuzz_kserve_binary", "headerless-bytes", bytes([0x30]) + le32(0) + words)
    write("fuzz_kserve_binary", "headerless-fp16",
          bytes([0x03]) + le32(0) + struct.pack("<6e", 1, 2, 3, 4, 5, 6))
    write("fuzz_kserve_binary", "headerless-pairs",
          bytes([0x54]) + le32(0) + bytes_elements([b"a", b"b", b"c", b"d"]))
    seed("issue-huge-bytes-shape", 0x00,
         {"inputs": [{"name": "text", "shape": [1 << 40], "datatype": "BYTES",
                      "parameters": {"binary_data_size": 8}}]}, bytes_elements([b"abcd"]))
    seed("issue-overflowing-binary-size", 0x01,
         {"inputs": [{"name": "x", "shape": [1, 1 << 61], "datatype": "FP32",
                      "parameters": {"binary_data_size": 0}}]}, b"")
    # Header length -1 equivalent (all JSON): the length covers the whole body.
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": [0] * 64}]}).encode()
    write("fuzz_kserve_binary", "all-json", bytes([0x01]) + le32(len(body)) + body)


def clipper_seeds():
    n = 0
    for text, value in json_literals("node-agent/kserve_json_test.cc"):
        if "input" in value or "input_batch" in value:
            write("fuzz_clipper", f"unit-{n:02d}", text)
            n += 1
    e2e = {
        "text": {"input": "hello clipper"},
        "row64": {"input": [0.25] * 64},
        "batch-text": {"input_batch": ["a", "b", "c"]},
        "batch-rows": {"input_batch": [[1, 2, 3, 4], [5, 6, 7, 8]]},
        "matrix": {"input": [[1, 2, 3], [4, 5, 6]]},
        "pairs": {"input_batch": [["a", "b"], ["c", "d"]]},
        "ints": {"input": [[1, 2], [3, 4]]},
        "ragged": {"input_batch": [[1, 2, 3, 4], [5]]},
        "issue-ragged-large-first-row": {"input_batch": [[0] * 300, [1]]},
        "issue-large-batch": {"input_batch": ["a"] * 200},
    }
    for name, body in e2e.items():
        write("fuzz_clipper", f"e2e-{name}", json.dumps(body))


def grpc_seeds():
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    def seed(name, build):
        req = pb.ModelInferRequest(model_name="m", id="req-1")
        build(req)
        write("fuzz_grpc_infer", name, req.SerializeToString())

    def typed_fp32(req):
        t = req.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        t.contents.fp32_contents.extend([0.5] * 64)
        req.outputs.add(name="y")

    def raw_fp32(req):
        req.inputs.add(name="x", datatype="FP32", shape=[2, 64])
        req.raw_input_contents.append(np.arange(128, dtype=np.float32).tobytes())
        req.parameters["priority"].int64_param = 1
        req.parameters["timeout"].int64_param = 5000

    def raw_bytes(req):
        req.inputs.add(name="text", datatype="BYTES", shape=[2])
        req.raw_input_contents.append(bytes_elements([b"you are a darn fool", b"hi"]))

    def typed_bytes(req):
        t = req.inputs.add(name="p", datatype="BYTES", shape=[1, 2])
        t.contents.bytes_contents.extend([b"a", b"b"])

    def ints(req):
        a = req.inputs.add(name="a", datatype="INT32", shape=[1, 2, 2])
        a.contents.int_contents.extend([1, 2, 3, 4])
        b = req.inputs.add(name="b", datatype="INT64", shape=[1])
        b.contents.int64_contents.append(-5)
        b.parameters["note"].string_param = "x"

    def fixed_fp16(req):
        req.inputs.add(name="x", datatype="FP16", shape=[2, 3])
        req.raw_input_contents.append(np.ones(6, dtype=np.float16).tobytes())

    def huge(req):
        req.inputs.add(name="x", datatype="FP32", shape=[1, 1 << 40])
        req.raw_input_contents.append(b"")

    def huge_typed_bytes(req):
        t = req.inputs.add(name="text", datatype="BYTES", shape=[1 << 40])
        t.contents.bytes_contents.append(b"a")

    def mismatch(req):
        req.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        req.raw_input_contents.append(b"\0" * 8)

    for name, build in [("typed-fp32", typed_fp32), ("raw-fp32", raw_fp32),
                        ("raw-bytes", raw_bytes), ("typed-bytes", typed_bytes), ("ints", ints),
                        ("fixed-fp16", fixed_fp16), ("size-mismatch", mismatch),
                        ("issue-huge-shape", huge), ("issue-huge-typed-bytes", huge_typed_bytes)]:
        seed(name, build)


def safetensors_seeds():
    def file(tensors, metadata=None, pad=0):
        header, data, offset = {}, b"", 0
        for name, dtype, shape, raw in tensors:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
            offset += len(raw)
            data += raw
        if metadata is not None:
            header["__metadata__"] = metadata
        text = json.dumps(header).encode() + b" " * pad
        return struct.pack("<Q", len(text)) + text + data

    write("fuzz_safetensors", "mlp", file([
        ("layers.0.weight", "F32", [4, 2], struct.pack("<8f", *range(8))),
        ("layers.0.bias", "F32", [4], struct.pack("<4f", 1, 2, 3, 4)),
    ], {"format": "pt"}, pad=3))
    write("fuzz_safetensors", "dtypes", file([
        ("a", "F16", [2], b"\x00\x3c\x00\xc0"),
        ("b", "BF16", [1], b"\x80\x3f"),
        ("c", "F64", [1], struct.pack("<d", 2.5)),
        ("d", "I64", [2], b"\x01" * 16),
        ("e", "F32", [0, 4], b""),
        ("f", "U8", [3], b"abc"),
    ]))
    write("fuzz_safetensors", "empty-header", struct.pack("<Q", 2) + b"{}")
    write("fuzz_safetensors", "bad-offsets", struct.pack("<Q", 60) +
          b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}    ' + b"\0" * 8)


def manifest_seeds():
    n = 0
    for folder in ("examples", "tests/e2e/manifests", "tests/e2e/manifests/bad"):
        path = ROOT / folder
        if not path.is_dir():
            continue
        for f in sorted(path.iterdir()):
            if f.suffix in (".yaml", ".yml", ".json") and f.stat().st_size < 8192:
                write("fuzz_manifest", f"{folder.replace('/', '-')}-{f.name}", f.read_bytes())
    for text in raw_literals("sdk/src/manifest_test.cc"):
        if "apiVersion" in text or "kind" in text:
            write("fuzz_manifest", f"unit-{n:02d}", text)
            n += 1
    write("fuzz_manifest", "slo-file-ref", """apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo, labels: {team: a}}
spec:
  runtime: echo
  config: {datatype: FP32, shape: [4]}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 500, policy: fixed, instances: 2}
  slo: {file: slo.yaml}
---
apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: inline}
spec:
  latency: {percentile: 99.9, targetMillis: 5}
  onOverload: default-output
  defaultOutput: {label: none}
""")


def main():
    kserve_json_seeds()
    kserve_binary_seeds()
    clipper_seeds()
    grpc_seeds()
    safetensors_seeds()
    manifest_seeds()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"corpus: {count} files, {total} bytes")


if __name__ == "__main__":
    main()
