"""BentoML serving the peers' echo and mlp (perf/bench_peers.py) with adaptive batching on
(batchable APIs, max_batch_size as ferry's functions; BentoML has no fixed delay: its dispatcher
waits adaptively within max_latency_ms, set to the SLO target, peer_common.py). The routes take
KServe v2 JSON requests on /v2/models/{echo,mlp}/infer: the body's `inputs` list is the batched
argument, so a request's answer is the list of its output tensors (KServe's `outputs`, without
the enclosing object).

  build/peers/bentoml/bin/bentoml serve serve_bentoml:Peer --port P   (cwd perf/peers)
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bentoml  # noqa: E402
import numpy as np  # noqa: E402

import peer_common  # noqa: E402


@bentoml.service(workers=1, traffic={"timeout": 60, "max_concurrency": 4096})
class Peer:
    def __init__(self):
        self.mlp = peer_common.Mlp()

    @bentoml.api(route="/v2/models/mlp/infer", batchable=True,
                 max_batch_size=peer_common.MLP_MAX_BATCH,
                 max_latency_ms=int(peer_common.SLO_MS))
    def mlp_infer(self, inputs: list[dict]) -> list[dict]:
        xs = [np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in inputs]
        rows = [x.shape[0] for x in xs]
        y = self.mlp(np.concatenate(xs))
        return [peer_common.kserve_output("output", "FP32", part, part.shape)
                for part in np.split(y, np.cumsum(rows)[:-1])]

    @bentoml.api(route="/v2/models/echo/infer", batchable=True,
                 max_batch_size=peer_common.ECHO_MAX_BATCH,
                 max_latency_ms=int(peer_common.SLO_MS))
    def echo_infer(self, inputs: list[dict]) -> list[dict]:
        return [peer_common.kserve_output("OUTPUT0", "BYTES", t["data"], t["shape"])
                for t in inputs]
