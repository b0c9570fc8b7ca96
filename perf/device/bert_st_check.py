#!/usr/bin/env python3
"""ferry's GPU sentence encoder next to sentence-transformers on the same GPU and model folder.

1. Cosine check: 50 fixed sentences embedded by ferry_gpu_bert_bench (fp32, fp16, bf16) and by
   sentence-transformers (PyTorch FP32 on the GPU, TF32 off); per precision the minimum and mean
   cosine, written to --check-json. Fails (exit 1) below 0.99999 for fp32 or 0.999 for fp16/bf16.
2. The same throughput grid as ferry_gpu_bert_bench for sentence-transformers, appended to --csv
   (rows with system "sentence-transformers"): the model's forward pass on pre-tokenized batches
   (padding-free here: every text of a batch has the same length), at fp32 and fp16
   (model.half()), plus model.encode() of one short sentence per call (tokenization included)
   for the single-request latency.
3. With --agent-bin: ferry-agent serving the same folder on the GPU (precision fp16) through
   POST /embed (TEI shape, one HTTP keep-alive connection): the 50 sentences' cosine against
   sentence-transformers, and the latency of one short sentence per request (p50/p99 over 300),
   which is what a client sees (HTTP, JSON, batcher, tokenizer, GPU) -- rows with system
   "ferry-agent-http".

Needs torch with CUDA, sentence-transformers and numpy; without them (or without a GPU) it says
so and exits 0.

Usage: bert_st_check.py --bench-bin BIN --model DIR --csv PATH --check-json PATH [--seconds S]
                        [--agent-bin AGENT --log-dir DIR]
"""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A man is playing guitar.",
    "The new movie is so great!",
    "I love pasta.",
    "Do you like pizza?",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "Python is a programming language.",
    "CUDA kernels run on the GPU.",
    "Ferry serves models close to their users.",
    "Café, naïve, résumé: accents are stripped by the uncased tokenizer.",
    "東京は日本の首都です。",
    "Emoji 🙂 and symbols ∑ ∞ ≠ appear in text too.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How many people live in Berlin?",
    "Berlin has a population of about 3.7 million registered inhabitants.",
    "The quick brown fox jumps over the lazy dog.",
    "Sphinx of black quartz, judge my vow.",
    "Interest rates rose by a quarter of a point on Wednesday.",
    "The central bank raised its benchmark rate.",
    "A child is building a sandcastle at the beach.",
    "Kids play in the sand by the sea.",
    "The recipe calls for two cups of flour and one egg.",
    "Add the flour slowly while stirring.",
    "Quantum computers use qubits instead of bits.",
    "The orchestra performed Beethoven's ninth symphony.",
    "Mount Everest is the highest mountain above sea level.",
    "She forgot her umbrella and got soaked in the rain.",
    "Please restart the server after applying the patch.",
    "The invoice is due at the end of the month.",
    "Photosynthesis converts light energy into chemical energy.",
    "A dog is running through a field of tall grass.",
    "The train to Zurich leaves from platform seven.",
    "He scored twice in the second half.",
    "Batteries store energy chemically.",
    "Short.",
    "",
    " ".join(["a long sentence that goes on"] * 60),  # longer than 256 tokens: truncated
]

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "model", "runs", "on",
         "small", "and", "large", "with", "low", "time", "batch"]
LENGTHS = [16, 32, 128, 256]
BATCHES = [1, 8, 32, 128, 512, 1024]
FIELDS = ["system", "mode", "gpu", "precision", "batch", "tokens_per_seq", "runs", "seconds",
          "sentences_per_s", "tokens_per_s", "tflops", "peak_tflops", "fraction_of_peak",
          "p50_ms", "p99_ms"]
# Dense peak TFLOP/s (fp32 CUDA cores; fp16 tensor cores, FP32 accumulate), as the C++ bench.
PEAKS = [("H200", 67, 989.4), ("H100 PCIe", 51, 756), ("H100 NVL", 60, 835), ("H100", 67, 989.4),
         ("A100", 19.5, 312), ("L40S", 91.6, 362), ("L4", 30.3, 121), ("A10", 31.2, 125)]


def synthetic_text(tokens, seed):
    """Exactly `tokens` tokens with [CLS]/[SEP]: the same texts as ferry_gpu_bert_bench."""
    return " ".join(WORDS[(i * 7 + seed * 13) % 18] for i in range(tokens - 2))


def peak(gpu, precision):
    for name, fp32, fp16 in PEAKS:
        if name in gpu:
            return fp32 if precision == "fp32" else fp16
    return 0


def ferry_embeddings(bench_bin, model, precision):
    out = subprocess.run([bench_bin, "embed", model, precision],
                         input="\n".join(SENTENCES) + "\n", capture_output=True, text=True,
                         check=True, timeout=120).stdout
    import numpy as np
    return np.array([[float(x) for x in line.split()] for line in out.splitlines()])


def cosines(a, b):
    import numpy as np
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def agent_check(agent_bin, model_dir, log_dir, reference, gpu):
    """Serves the model from ferry-agent on the GPU; returns (check dict, csv rows)."""
    import numpy as np
    work = tempfile.mkdtemp(prefix="ferry-minilm-gpu-")
    # FERRY_CHECK_ACCELERATOR=cpu dry-runs this part on a machine without a GPU.
    hardware = "{accelerator: gpu, gpuMemoryMiB: 1024}"
    config = "{precision: fp16}"
    if os.environ.get("FERRY_CHECK_ACCELERATOR") == "cpu":
        hardware, config = "{accelerator: cpu}", "{}"
    with open(os.path.join(work, "minilm.yaml"), "w") as f:
        f.write(f"""apiVersion: ferry.dev/v1
kind: Function
metadata: {{name: minilm}}
spec:
  runtime: sentence-embedding
  model: {{uri: "file://{os.path.abspath(model_dir)}"}}
  config: {config}
  hardware: {hardware}
  batching: {{maxBatchSize: 256, maxBatchTokens: 16384, maxQueueDelayMicros: 0, policy: aimd}}
""")
    log_path = os.path.join(log_dir, "agent_minilm_gpu.log")
    log = open(log_path, "w+")
    proc = subprocess.Popen([agent_bin, "--manifests", work, "--http-port", "0", "--grpc-port",
                             "-1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        port, deadline = None, time.time() + 120
        while time.time() < deadline and port is None and proc.poll() is None:
            time.sleep(0.2)
            log.seek(0)
            text = log.read()
            m = re.search(r"listening http=[\d.]+:(\d+)", text)
            if m and "ready" in text:
                port = int(m.group(1))
        if port is None:
            log.seek(0)
            print(log.read()[-3000:])
            return {"ok": False, "error": "agent did not start (see agent_minilm_gpu.log)"}, []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def embed(inputs):
            conn.request("POST", "/embed", body=json.dumps({"inputs": inputs}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/embed: HTTP {resp.status}: {data[:300]!r}")
            return json.loads(data)

        got = np.array(embed(SENTENCES))
        c = cosines(got, reference)
        sentence = "A man is playing a guitar on the stage tonight."
        ms = []
        for i in range(320):
            t0 = time.perf_counter()
            embed(sentence)
            if i >= 20:
                ms.append(1e3 * (time.perf_counter() - t0))
        ms.sort()
        p50, p99 = ms[len(ms) // 2], ms[int(0.99 * (len(ms) - 1) + 0.5)]
        print(f"ferry-agent GPU fp16 over HTTP /embed: min cosine {c.min():.7f} vs "
              f"sentence-transformers; one sentence per request p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        check = {"min_cosine": float(c.min()), "mean_cosine": float(c.mean()), "floor": 0.999,
                 "single_request_p50_ms": p50, "single_request_p99_ms": p99,
                 "ok": bool(c.min() >= 0.999)}
        row = ["ferry-agent-http", "latency", gpu, "fp16", 1, "", len(ms), "", "", "", "", "",
               "", p50, p99]
        return check, [row]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-bin", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--check-json", required=True)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--agent-bin", help="also serve the model from ferry-agent on the GPU")
    parser.add_argument("--log-dir", default=".", help="where the agent's log goes")
    args = parser.parse_args()
    try:
        import numpy  # noqa: F401  (the helpers need it; fail here, not half way)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        print(f"bert_st_check: skipped, {e}")
        return 0
    if not torch.cuda.is_available():
        print("bert_st_check: skipped, torch sees no GPU")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    model = SentenceTransformer(args.model, device="cuda")
    model.eval()

    # 1. Cosine check.
    reference = model.encode(SENTENCES, batch_size=64, convert_to_numpy=True,
                             normalize_embeddings=True)
    check = {"gpu": gpu, "model": os.path.basename(os.path.normpath(args.model)),
             "sentences": len(SENTENCES), "reference": "sentence-transformers fp32 (TF32 off)"}
    ok = True
    for precision, floor in (("fp32", 0.99999), ("fp16", 0.999), ("bf16", 0.999)):
        got = ferry_embeddings(args.bench_bin, args.model, precision)
        if got.shape != reference.shape:
            print(f"ferry {precision}: shape {got.shape}, expected {reference.shape}")
            ok = False
            continue
        c = cosines(got, reference)
        check[f"ferry_{precision}"] = {"min_cosine": float(c.min()), "mean_cosine": float(c.mean()),
                                       "floor": floor, "worst_sentence": int(c.argmin())}
        print(f"ferry GPU {precision} vs sentence-transformers: min cosine {c.min():.7f}, "
              f"mean {c.mean():.7f} (floor {floor})")
        ok = ok and bool(c.min() >= floor)
    rows = []
    if args.agent_bin:
        check["ferry_agent_http"], rows = agent_check(args.agent_bin, args.model, args.log_dir,
                                                      reference, gpu)
        ok = ok and check["ferry_agent_http"]["ok"]
    check["ok"] = ok
    with open(args.check_json, "w") as f:
        json.dump(check, f, indent=2)

    # 2. Throughput and latency of sentence-transformers on the same grid.
    cfg = model[0].auto_model.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers

    def flops_per_token(length):
        return 2.0 * layers * (4 * h * h + 2 * h * inter + 2.0 * length * h)

    for precision in ("fp32", "fp16"):
        m = SentenceTransformer(args.model, device="cuda")
        if precision == "fp16":
            m = m.half()
        m.eval()
        p = peak(gpu, precision)
        for length in LENGTHS:
            for batch in BATCHES:
                texts = [synthetic_text(length, i) for i in range(batch)]
                features = m.tokenize(texts)
                features = {k: v.to("cuda") for k, v in features.items()}
                tokens = int(features["attention_mask"].sum())
                with torch.inference_mode():
                    m(features)
                    torch.cuda.synchronize()
                    runs, start = 0, time.perf_counter()
                    times = []
                    while True:
                        t0 = time.perf_counter()
                        m(features)
                        torch.cuda.synchronize()
                        times.append(1e3 * (time.perf_counter() - t0))
                        runs += 1
                        elapsed = time.perf_counter() - start
                        if elapsed >= args.seconds and runs >= 3:
                            break
                tps = tokens * runs / elapsed
                tflops = tps * flops_per_token(tokens / batch) / 1e12
                times.sort()
                rows.append(["sentence-transformers", "throughput", gpu, precision, batch,
                             tokens // batch, runs, elapsed, batch * runs / elapsed, tps, tflops,
                             p or "", tflops / p if p else "", times[len(times) // 2],
                             times[min(len(times) - 1, int(0.99 * (len(times) - 1) + 0.5))]])
                print(f"sentence-transformers {precision} batch {batch:5d} len {tokens // batch:4d}:"
                      f" {tps:12.4g} tokens/s, {tflops:7.2f} TFLOP/s")
        sentence = "A man is playing a guitar on the stage tonight."
        ms = []
        for i in range(220):
            t0 = time.perf_counter()
            m.encode([sentence], convert_to_numpy=True, normalize_embeddings=True)
            if i >= 20:
                ms.append(1e3 * (time.perf_counter() - t0))
        ms.sort()
        n_tokens = int(m.tokenize([sentence])["attention_mask"].sum())
        rows.append(["sentence-transformers", "latency", gpu, precision, 1, n_tokens, len(ms), "",
                     "", "", "", "", "", ms[len(ms) // 2], ms[int(0.99 * (len(ms) - 1) + 0.5)]])
        print(f"sentence-transformers {precision} single request: p50 {ms[len(ms) // 2]:.3f} ms")
        del m
        torch.cuda.empty_cache()
    new_file = not os.path.exists(args.csv)
    with open(args.csv, "a") as f:
        if new_file:
            f.write(",".join(FIELDS) + "\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
