"""Ray Serve serving the peers' echo and mlp (perf/bench_peers.py) with @serve.batch
(max_batch_size and batch_wait_timeout_s as ferry's functions, peer_common.py), behind a
FastAPI ingress that takes KServe v2 JSON requests on /v2/models/{echo,mlp}/infer and answers
KServe v2 JSON (Ray Serve has no KServe protocol of its own).

  build/peers/rayserve/bin/python perf/peers/serve_rayserve.py --port P
"""

import argparse
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import ray  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from ray import serve  # noqa: E402

import peer_common  # noqa: E402

app = FastAPI()


@serve.deployment(max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Peer:
    def __init__(self):
        self.mlp = peer_common.Mlp()

    @serve.batch(max_batch_size=peer_common.MLP_MAX_BATCH,
                 batch_wait_timeout_s=peer_common.MAX_DELAY_S)
    async def mlp_batch(self, xs):
        rows = [x.shape[0] for x in xs]
        y = self.mlp(np.concatenate(xs))
        return np.split(y, np.cumsum(rows)[:-1])

    @serve.batch(max_batch_size=peer_common.ECHO_MAX_BATCH,
                 batch_wait_timeout_s=peer_common.MAX_DELAY_S)
    async def echo_batch(self, items):
        return list(items)

    @app.post("/v2/models/mlp/infer")
    async def mlp_infer(self, request: Request):
        t = (await request.json())["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        y = await self.mlp_batch(x)
        return {"model_name": "mlp",
                "outputs": [peer_common.kserve_output("output", "FP32", y, y.shape)]}

    @app.post("/v2/models/echo/infer")
    async def echo_infer(self, request: Request):
        t = (await request.json())["inputs"][0]
        data = await self.echo_batch(t["data"])
        return {"model_name": "echo",
                "outputs": [peer_common.kserve_output("OUTPUT0", "BYTES", data, t["shape"])]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Peer.bind(), route_prefix="/")
    print("rayserve: serving", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
