"""What every peer server of perf/bench_peers.py shares: the examples' MLP as a NumPy forward
pass over the same safetensors file ferry's `mlp` runtime loads, and the batching settings.

Only NumPy and the standard library: each peer's virtualenv has NumPy, not safetensors, so the
file is read directly (8-byte little-endian header length, a JSON header, the raw tensors).
"""

import json
import os

import numpy as np

# The same settings as ferry's functions in the comparison (perf/bench_peers.py): mlp as in
# examples/mlp.yaml (maxBatchSize 128, maxQueueDelayMicros 1000), echo with the manifest
# defaults (32, 1000 us).
MLP_MAX_BATCH = int(os.environ.get("PEER_MLP_MAX_BATCH", "128"))
ECHO_MAX_BATCH = int(os.environ.get("PEER_ECHO_MAX_BATCH", "32"))
MAX_DELAY_S = float(os.environ.get("PEER_MAX_DELAY_US", "1000")) / 1e6
SLO_MS = float(os.environ.get("PEER_SLO_MS", "10"))


def load_safetensors(path):
    """{name: float32 array} of a safetensors file holding F32 tensors."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(info["shape"])
    return out


class Mlp:
    """layers.{i}.weight [out, in], layers.{i}.bias [out]; relu after every layer but the last
    (examples/mlp.yaml: activations [relu, relu, none]), as kernels/mlp_runtime.cc computes it:
    y = x W^T + b."""

    def __init__(self, path=None):
        path = path or os.environ["PEER_MLP_MODEL"]
        t = load_safetensors(path)
        count = len([k for k in t if k.endswith(".weight")])
        self.layers = [(np.ascontiguousarray(t[f"layers.{i}.weight"].T), t[f"layers.{i}.bias"])
                       for i in range(count)]
        self.features = self.layers[0][0].shape[0]

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float32)
        for i, (wt, b) in enumerate(self.layers):
            x = x @ wt + b
            if i + 1 < len(self.layers):
                np.maximum(x, 0, out=x)
        return x


def kserve_output(name, datatype, array_or_list, shape):
    """A KServe v2 JSON output tensor."""
    data = array_or_list.reshape(-1).tolist() if hasattr(array_or_list, "reshape") \
        else list(array_or_list)
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}
