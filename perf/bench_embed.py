#!/usr/bin/env python3
"""CPU benchmark of sentence embeddings (all-MiniLM-L6-v2): ferry's encoder next to
sentence-transformers (PyTorch) and onnxruntime on the same cores, at batch 1, 8 and 32 and 16,
64 and 128 tokens per text.

ferry runs through `ferry-embed-tool bench` (tokenize + packed FP32 forward + pooling);
sentence-transformers runs `SentenceTransformer(folder).encode(texts, batch_size=B,
normalize_embeddings=True)` in a separate virtualenv (torch is never part of `make test`);
onnxruntime runs the same weights exported to ONNX once by torch.onnx (into BUILD/minilm.onnx),
with the `tokenizers` library, padding per batch, and mean pooling in NumPy. All
embed the same synthetic texts, made of words that are one token each, so every text has exactly
the stated number of tokens ([CLS] and [SEP] included). Both are pinned to the same CPUs
(taskset) with the same number of threads.

Each engine reports wall-clock tokens/s and tokens per CPU-second; on a machine shared with other
work the second is the steadier measure of efficiency. With --rounds N the three engines take
turns N times (ferry, onnxruntime, sentence-transformers, then again), so that drift in the
machine's load hits all of them alike, and each shape reports the median round (by tokens per
CPU-second). The load average is recorded before and after.

Usage:
  python3 perf/bench_embed.py --build-dir build --st-python build/st-venv/bin/python \
      [--cpus 0,1] [--seconds 3] [--rounds 3] [--out perf/results/bench_embed.json]
  (make the st-venv with: python3 -m venv build/st-venv &&
   build/st-venv/bin/pip install sentence-transformers onnxruntime onnx)
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "all-MiniLM-L6-v2"
BATCHES = (1, 8, 32)
LENGTHS = (16, 64, 128)
# The same words, in the same order, as ferry-embed-tool's SyntheticText.
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "model", "runs", "on",
         "small", "and", "large", "with", "low", "time", "batch"]

ST_SCRIPT = r"""
import json, sys, time, resource
import torch
from sentence_transformers import SentenceTransformer
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
WORDS = cfg["words"]
def text(tokens, seed):
    return " ".join(WORDS[(i * 7 + seed * 13) % 18] for i in range(tokens - 2))
model = SentenceTransformer(cfg["model"], device="cpu")
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
for batch, length in cfg["runs"]:
    texts = [text(length, i) for i in range(batch)]
    ntok = sum(len(x) for x in model.tokenize(texts)["input_ids"])
    with torch.inference_mode():
        model.encode(texts, batch_size=batch, normalize_embeddings=True)
        c0, t0, it = cpu(), time.perf_counter(), 0
        while True:
            model.encode(texts, batch_size=batch, normalize_embeddings=True)
            it += 1
            el = time.perf_counter() - t0
            if el >= cfg["seconds"]:
                break
    c = cpu() - c0
    print(json.dumps({"batch": batch, "tokens_per_text": ntok / batch, "iterations": it,
                      "seconds": el, "cpu_seconds": c, "sentences_per_s": it * batch / el,
                      "tokens_per_s": it * ntok / el, "tokens_per_cpu_s": it * ntok / c,
                      "batch_latency_ms": 1000 * el / it}), flush=True)
"""


ORT_SCRIPT = r"""
import json, os, sys, time, resource
import numpy as np
cfg = json.loads(sys.argv[1])
onnx_path = cfg["onnx"]
if not os.path.exists(onnx_path):
    # Export once from the same folder's weights (PyTorch, in this virtualenv only).
    import torch
    from transformers import AutoModel
    bert = AutoModel.from_pretrained(cfg["model"]).eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(Encoder(), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          onnx_path, input_names=names, output_names=["last_hidden_state"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "b", 1: "t"} for n in names + ["last_hidden_state"]})
import onnxruntime as ort
from tokenizers import BertWordPieceTokenizer
opts = ort.SessionOptions()
opts.intra_op_num_threads = cfg["threads"]
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
tok = BertWordPieceTokenizer(os.path.join(cfg["model"], "vocab.txt"), lowercase=True)
tok.enable_truncation(256)
tok.enable_padding()
WORDS = cfg["words"]
def text(tokens, seed):
    return " ".join(WORDS[(i * 7 + seed * 13) % 18] for i in range(tokens - 2))
def encode(texts):
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    h = sess.run(None, {"input_ids": ids, "attention_mask": mask,
                        "token_type_ids": np.zeros_like(ids)})[0]
    p = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return p / np.linalg.norm(p, axis=1, keepdims=True), int(mask.sum())
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
for batch, length in cfg["runs"]:
    texts = [text(length, i) for i in range(batch)]
    _, ntok = encode(texts)
    c0, t0, it = cpu(), time.perf_counter(), 0
    while True:
        encode(texts)
        it += 1
        el = time.perf_counter() - t0
        if el >= cfg["seconds"]:
            break
    c = cpu() - c0
    print(json.dumps({"batch": batch, "tokens_per_text": ntok / batch, "iterations": it,
                      "seconds": el, "cpu_seconds": c, "sentences_per_s": it * batch / el,
                      "tokens_per_s": it * ntok / el, "tokens_per_cpu_s": it * ntok / c,
                      "batch_latency_ms": 1000 * el / it}), flush=True)
"""


def run_ferry(tool, cpus, threads, seconds, batch, length):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(["taskset", "-c", cpus, tool, "bench", str(MODEL), str(batch),
                          str(length), str(seconds)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_python(script, what, python, cpus, threads, seconds, runs, **extra):
    cfg = {"model": str(MODEL), "threads": threads, "seconds": seconds, "runs": runs,
           "words": WORDS, **extra}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run(["taskset", "-c", cpus, python, "-c", script, json.dumps(cfg)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{what} run failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--st-python", default=None,
                        help="python of a virtualenv with sentence-transformers (skipped if not "
                             "given)")
    parser.add_argument("--cpus", default="0,1")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-onnx", action="store_true",
                        help="skip onnxruntime (its model is exported once with torch into "
                             "BUILD/minilm.onnx)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="engines take turns this many times; the median round is reported")
    parser.add_argument("--no-st", action="store_true",
                        help="skip sentence-transformers (onnxruntime still needs torch once, "
                             "to export its model)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    threads = len(args.cpus.split(","))
    tool = str(pathlib.Path(args.build_dir) / "kernels" / "ferry-embed-tool")
    subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_minilm.py")], check=True)
    runs = [(b, n) for n in LENGTHS for b in BATCHES]

    onnx = pathlib.Path(args.build_dir) / "minilm.onnx"
    rounds = {"ferry": [], "sentence_transformers": [], "onnxruntime": []}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        rows = []
        for b, n in runs:
            rows.append(run_ferry(tool, args.cpus, threads, args.seconds, b, n))
            print(f"round {rnd} ferry", json.dumps(rows[-1]), flush=True)
        rounds["ferry"].append(rows)
        if args.st_python and not args.no_onnx:
            try:
                rows = run_python(ORT_SCRIPT, "onnxruntime", args.st_python, args.cpus, threads,
                                  args.seconds, runs, onnx=str(onnx.resolve()))
            except RuntimeError as e:
                print(e, file=sys.stderr)
                rows = []
            for r in rows:
                print(f"round {rnd} onnxruntime", json.dumps(r), flush=True)
            rounds["onnxruntime"].append(rows)
        if args.st_python and not args.no_st:
            rows = run_python(ST_SCRIPT, "sentence-transformers", args.st_python, args.cpus,
                              threads, args.seconds, runs)
            for r in rows:
                print(f"round {rnd} sentence-transformers", json.dumps(r), flush=True)
            rounds["sentence_transformers"].append(rows)

    def median_round(per_round):
        # Per shape, the round with the median tokens per CPU-second.
        by_shape = {}
        for rows in per_round:
            for r in rows:
                by_shape.setdefault((r["batch"], round(r["tokens_per_text"])), []).append(r)
        out = []
        for key in sorted(by_shape, key=lambda k: (k[1], k[0])):
            rs = sorted(by_shape[key], key=lambda r: r["tokens_per_cpu_s"])
            out.append(dict(rs[len(rs) // 2], rounds=len(rs)))
        return out

    results = {"cpus": args.cpus, "threads": threads, "rounds": args.rounds,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               **{k: median_round(v) for k, v in rounds.items()}, "all_rounds": rounds}
    print(f"load average before {load_before}, after {results['load_average_after']}")

    def keyed(rows):
        return {(r["batch"], round(r["tokens_per_text"])): r for r in rows}

    st, ort = keyed(results["sentence_transformers"]), keyed(results["onnxruntime"])
    print("\n| tokens/text | batch | ferry tok/s | ferry tok/CPU-s | ST tok/s | ST tok/CPU-s "
          "| ORT tok/s | ORT tok/CPU-s | ferry/ST (tok/CPU-s) | ferry/ORT (tok/CPU-s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["ferry"]:
        key = (r["batch"], round(r["tokens_per_text"]))
        cells = [f"{key[1]}", f"{key[0]}", f"{r['tokens_per_s']:.0f}",
                 f"{r['tokens_per_cpu_s']:.0f}"]
        ratios = []
        for peer in (st.get(key), ort.get(key)):
            if peer:
                cells += [f"{peer['tokens_per_s']:.0f}", f"{peer['tokens_per_cpu_s']:.0f}"]
                ratios.append(f"{r['tokens_per_cpu_s'] / peer['tokens_per_cpu_s']:.2f}x")
            else:
                cells += ["-", "-"]
                ratios.append("-")
        print("| " + " | ".join(cells + ratios) + " |")
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
