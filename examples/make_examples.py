#!/usr/bin/env python3
"""Generates the model files the example manifests reference.

examples/models/mlp.safetensors: a 64 -> 256 -> 256 -> 16 dense network in the PyTorch
nn.Linear layout (layers.{i}.weight [out, in], layers.{i}.bias [out], float32), with weights
from a seeded RNG so every machine gets the same model. Existing files are kept.
"""

import os
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
DIMS = [64, 256, 256, 16]
SEED = 20190114  # the CIDR 2019 paper's conference date


def make_mlp(path):
    rng = np.random.default_rng(SEED)
    tensors = {}
    for i, (n_in, n_out) in enumerate(zip(DIMS[:-1], DIMS[1:])):
        # Kaiming-uniform-like scale, as nn.Linear initialises.
        bound = 1.0 / np.sqrt(n_in)
        tensors[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        tensors[f"layers.{i}.bias"] = rng.uniform(-bound, bound, (n_out,)).astype(np.float32)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"dims": ",".join(map(str, DIMS)), "seed": str(SEED)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # atomic: a half-written model is never picked up


def main():
    os.makedirs(MODELS, exist_ok=True)
    path = os.path.join(MODELS, "mlp.safetensors")
    if os.path.exists(path):
        print(f"make_examples: {os.path.relpath(path)} present")
    else:
        make_mlp(path)
        print(f"make_examples: wrote {os.path.relpath(path)} ({' -> '.join(map(str, DIMS))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
