"""NVIDIA PyTriton (Triton Inference Server with Python callables) serving the peers' echo and
mlp (perf/bench_peers.py), Triton's dynamic batcher on: max_batch_size and
max_queue_delay_microseconds as ferry's functions (peer_common.py). KServe v2 over HTTP.

  build/peers/pytriton/bin/python perf/peers/serve_pytriton.py --port P

If Triton's Python backend cannot load libpython, bench_peers.py sets LD_LIBRARY_PATH to the
virtualenv's base interpreter's library folder.
"""

import argparse
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

import peer_common  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    mlp = peer_common.Mlp()
    delay_us = int(peer_common.MAX_DELAY_S * 1e6)

    @batch
    def mlp_fn(input):
        return {"output": mlp(input)}

    @batch
    def echo_fn(INPUT0):
        return {"OUTPUT0": INPUT0}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port,
                          grpc_address="127.0.0.1", grpc_port=args.port + 1,
                          metrics_port=args.port + 2)
    with Triton(config=config) as triton:
        triton.bind(model_name="mlp", infer_func=mlp_fn,
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(mlp.features,))],
                    outputs=[Tensor(name="output", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=peer_common.MLP_MAX_BATCH,
                                       batcher=DynamicBatcher(
                                           max_queue_delay_microseconds=delay_us)))
        triton.bind(model_name="echo", infer_func=echo_fn,
                    inputs=[Tensor(name="INPUT0", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="OUTPUT0", dtype=bytes, shape=(1,))],
                    config=ModelConfig(max_batch_size=peer_common.ECHO_MAX_BATCH,
                                       batcher=DynamicBatcher(
                                           max_queue_delay_microseconds=delay_us)))
        print("pytriton: serving", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
