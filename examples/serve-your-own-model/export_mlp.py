#!/usr/bin/env python3
"""Exports a small PyTorch MLP to the safetensors layout ferry's `mlp` runtime loads.

    python examples/serve-your-own-model/export_mlp.py --out my-model/classifier.safetensors

The model is a classifier of 4 features into 3 classes: Linear(4, 16) -> ReLU -> Linear(16, 16)
-> ReLU -> Linear(16, 3) (softmax applied by ferry, `activations: [relu, relu, softmax]`). With
PyTorch installed it is a torch.nn.Sequential, trained for a few hundred steps on a synthetic,
seeded data set; without PyTorch the same architecture is built and trained in NumPy, so the
script (and docs/serve-your-own-model.md, which runs it in ferry's tests) works either way.

What the `mlp` runtime needs (kernels/mlp_runtime.cc), and what `to_ferry_mlp` does to any
state dict of Linear layers (torch tensors or NumPy arrays):

  * tensors named exactly `layers.{i}.weight` ([out, in], as nn.Linear stores it) and
    `layers.{i}.bias` ([out]) for i = 0..L-1: nn.Sequential's `0.weight`, `2.weight`, ... (or
    `fc1.weight`, ...) are renumbered in order, and tensors without parameters (ReLU) vanish;
  * a bias for every layer: a Linear(..., bias=False) gets an explicit zero bias;
  * float32 (float16/bfloat16/float64 weights are converted);
  * weight shapes that chain: layer i's `in` is layer i-1's `out`.

`--check` also prints a reference output for two sample rows, computed in NumPy from the
exported file, to compare with what ferry answers.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

DIMS = (4, 16, 16, 3)
SEED = 7
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def to_numpy(t):
    """A torch tensor (any dtype, any device) or array-like as a float32 NumPy array."""
    if hasattr(t, "detach"):
        t = t.detach().to("cpu")
        if str(t.dtype) != "torch.float32":
            t = t.float()
        return t.numpy().astype(np.float32, copy=False)
    return np.asarray(t, dtype=np.float32)


def to_ferry_mlp(state_dict):
    """Renames a state dict of Linear layers (in order) to ferry's layers.{i}.weight/bias.

    Weights are the 2-D `*.weight` tensors in the dict's order (PyTorch keeps registration
    order); each one's bias is the `*.bias` with the same prefix, or zeros when the layer has
    none. Anything else (e.g. a BatchNorm's running stats) is refused rather than dropped,
    since the runtime could not apply it.
    """
    weights = [k for k, v in state_dict.items()
               if k.endswith("weight") and np.ndim(to_numpy(v)) == 2]
    used = set()
    out = {}
    prev_out = None
    for i, wkey in enumerate(weights):
        w = to_numpy(state_dict[wkey])
        prefix = wkey[: -len("weight")]
        bkey = prefix + "bias"
        if bkey in state_dict:
            b = to_numpy(state_dict[bkey])
            used.add(bkey)
        else:
            b = np.zeros(w.shape[0], np.float32)
            print(f"export_mlp: {wkey} has no bias: writing zeros (the mlp runtime needs one)",
                  file=sys.stderr)
        if b.shape != (w.shape[0],):
            raise ValueError(f"{bkey}: shape {list(b.shape)}, expected [{w.shape[0]}]")
        if prev_out is not None and w.shape[1] != prev_out:
            raise ValueError(f"{wkey}: takes {w.shape[1]} inputs but the previous layer "
                             f"produces {prev_out}")
        prev_out = w.shape[0]
        used.add(wkey)
        out[f"layers.{i}.weight"] = np.ascontiguousarray(w)
        out[f"layers.{i}.bias"] = np.ascontiguousarray(b)
    rest = [k for k in state_dict if k not in used]
    if rest:
        raise ValueError(f"tensors the mlp runtime cannot apply: {rest}")
    if not out:
        raise ValueError("no 2-D *.weight tensors: not a stack of Linear layers")
    return out


def synthetic_data(n=600):
    """Three Gaussian blobs in 4-D, shaped like the iris data set's classes."""
    rng = np.random.default_rng(SEED)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    y = rng.integers(0, 3, n)
    x = centers[y] + 0.3 * rng.standard_normal((n, 4))
    return x.astype(np.float32), y


def train_torch(steps):
    import torch
    from torch import nn
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    x, y = synthetic_data()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.state_dict()  # keys 0.weight, 0.bias, 2.weight, 2.bias, 4.weight, 4.bias


def train_numpy(steps):
    """The same network and loss with hand-written gradients (plain gradient descent)."""
    rng = np.random.default_rng(SEED)
    params = []
    for n_in, n_out in zip(DIMS[:-1], DIMS[1:]):
        bound = 1.0 / np.sqrt(n_in)  # nn.Linear's initialisation range
        params.append([rng.uniform(-bound, bound, (n_out, n_in)),
                       rng.uniform(-bound, bound, n_out)])
    x, y = synthetic_data()
    onehot = np.eye(3)[y]
    for _ in range(steps):
        acts = [x]
        for i, (w, b) in enumerate(params):
            h = acts[-1] @ w.T + b
            acts.append(np.maximum(h, 0) if i + 1 < len(params) else h)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        for i in reversed(range(len(params))):
            w, b = params[i]
            gw, gb = grad.T @ acts[i], grad.sum(axis=0)
            grad = grad @ w
            if i > 0:
                grad = grad * (acts[i] > 0)
            params[i][0] = w - 0.1 * gw
            params[i][1] = b - 0.1 * gb
    # Named as nn.Sequential would name them, so the renaming below is the same as for torch.
    return {f"{2 * i}.{n}": v for i, (w, b) in enumerate(params)
            for n, v in (("weight", w), ("bias", b))}


def reference(path, rows):
    """The exported file's output for `rows`: ReLU between layers, softmax after the last."""
    t = load_file(path)
    h = np.asarray(rows, np.float64)
    n = len(t) // 2
    for i in range(n):
        h = h @ t[f"layers.{i}.weight"].astype(np.float64).T + t[f"layers.{i}.bias"]
        if i + 1 < n:
            h = np.maximum(h, 0)
    z = np.exp(h - h.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="classifier.safetensors", help="file to write")
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--numpy", action="store_true", help="use NumPy even if PyTorch is present")
    ap.add_argument("--check", action="store_true",
                    help="print the reference output for two sample rows (JSON)")
    args = ap.parse_args()

    try:
        if args.numpy:
            raise ImportError
        import torch  # noqa: F401
        state, via = train_torch(args.steps), "pytorch"
    except ImportError:
        state, via = train_numpy(args.steps), "numpy"
    tensors = to_ferry_mlp(state)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata={"dims": ",".join(map(str, DIMS)), "trained_with": via})
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items())
    print(f"export_mlp: wrote {args.out} (trained with {via}): {shapes}")
    if args.check:
        print(json.dumps({"input": SAMPLE,
                          "output": np.round(reference(args.out, SAMPLE), 4).tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
