#!/usr/bin/env python3
"""Copies a sentence-transformers model folder for the device bundle, optionally with its F32
weights stored as F16 (half the bytes: all-MiniLM-L6-v2's 87 MiB of weights become 44 MiB).

Both ferry (kernels/safetensors: F16 is widened to FP32 on load) and sentence-transformers
(PyTorch casts to the model's FP32 parameters) read the converted folder, so the comparisons on
the device compare like with like; the FP16 rounding of the weights is the same for both.

Usage: pack_model.py SRC DEST [--dtype fp16|fp32]     (numpy speeds fp16 up; not required)
"""

import argparse
import json
import os
import shutil
import struct
import sys


def to_f16(raw):
    """Little-endian float32 bytes to float16 bytes, rounding to nearest even."""
    try:
        import numpy as np
        return np.frombuffer(raw, dtype="<f4").astype("<f2").tobytes()
    except ImportError:  # the standard library does it too, more slowly
        n = len(raw) // 4
        return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", raw))


def convert_safetensors(src, dest):
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out_header, chunks, offset = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            out_header[name] = info
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        dtype = info["dtype"]
        if dtype == "F32":
            raw = to_f16(raw)
            dtype = "F16"
        out_header[name] = {"dtype": dtype, "shape": info["shape"],
                            "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    with open(dest, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("dest")
    parser.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.src, "model.safetensors")):
        print(f"pack_model.py: {args.src} has no model.safetensors", file=sys.stderr)
        return 1
    shutil.rmtree(args.dest, ignore_errors=True)
    # Everything but the weights as is (configs, vocabulary, tokenizer, pooling).
    shutil.copytree(args.src, args.dest, ignore=shutil.ignore_patterns(
        "model.safetensors", "*.bin", "*.onnx", "*.h5", "*.msgpack", "onnx", "openvino"))
    src_weights = os.path.join(args.src, "model.safetensors")
    dest_weights = os.path.join(args.dest, "model.safetensors")
    if args.dtype == "fp32":
        shutil.copyfile(src_weights, dest_weights)
    else:
        convert_safetensors(src_weights, dest_weights)
    print(f"pack_model.py: {args.dest} ({args.dtype} weights, "
          f"{os.path.getsize(dest_weights) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
