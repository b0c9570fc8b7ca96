"""Seldon MLServer serving the peers' echo and mlp (perf/bench_peers.py), adaptive batching on:
max_batch_size and max_batch_time as ferry's functions (peer_common.py). KServe v2 over HTTP.

  build/peers/mlserver/bin/python perf/peers/serve_mlserver.py --port P
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput  # noqa: E402

import peer_common  # noqa: E402


class MlpModel(MLModel):
    async def load(self):
        self.mlp = peer_common.Mlp()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, self.mlp.features)
        y = self.mlp(x)
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("output", y)])


class EchoModel(MLModel):
    async def load(self):
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inp = payload.inputs[0]
        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(
            name="OUTPUT0", shape=inp.shape, datatype="BYTES", data=inp.data)])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    args = p.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="ferry-peer-mlserver-"))
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": args.port,
        "grpc_port": args.grpc_port or args.port + 1,
        "metrics_port": args.metrics_port or args.port + 2,
        "parallel_workers": 0,  # inference in the server process: one core, as ferry's agent
        "debug": False,
    }))
    for name, impl, max_batch in (("mlp", "MlpModel", peer_common.MLP_MAX_BATCH),
                                  ("echo", "EchoModel", peer_common.ECHO_MAX_BATCH)):
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": f"serve_mlserver.{impl}",
            "max_batch_size": max_batch, "max_batch_time": peer_common.MAX_DELAY_S}))
    os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
    mlserver = pathlib.Path(sys.executable).parent / "mlserver"
    os.execv(str(mlserver), [str(mlserver), "start", str(folder)])


if __name__ == "__main__":
    main()
