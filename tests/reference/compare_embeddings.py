#!/usr/bin/env python3
"""Compares ferry's CPU sentence embeddings (FP32) with the NumPy reference (float64).

ferry's side runs through `ferry-embed-tool embed MODEL_DIR` (its own tokenizer and encoder);
the reference is tests/reference/minilm_numpy.py. Prints the lowest cosine over SENTENCES and
exits 1 when it is under --min-cosine (0.99999).

Usage: compare_embeddings.py --tool BUILD/kernels/ferry-embed-tool --model models/all-MiniLM-L6-v2
"""

import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minilm_numpy  # noqa: E402

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
    "The new movie is so great!",
    "I love pasta.",
    "Do you like pizza?",
    "How do I reset my password?",
    "Steps to recover a forgotten account password",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "The stock market fell sharply on Tuesday.",
    "Shares dropped at the open after weak earnings.",
    "Photosynthesis converts light energy into chemical energy.",
    "Mitochondria are the powerhouse of the cell.",
    "GPUs accelerate matrix multiplication.",
    "Serving models with low latency needs batching.",
    "ferry places functions on CPUs and GPUs.",
    "Café au lait, s'il vous plaît!",
    "naïve résumé façade jalapeño",
    "Привет, как дела?",
    "我爱自然语言处理",
    "日本語の文章です。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "Emoji time 😀👍🏽🔥",
    "!!! ??? ... ---",
    "",
    "a",
    "The",
    "antidisestablishmentarianism",
    "supercalifragilisticexpialidocious " * 3,
    "x" * 150,
    "Tab\tseparated\tvalues\nand new lines",
    "UPPER CASE SENTENCE WITH SHOUTING",
    "numbers 3.14159 and 2,718 and 1e10",
    "https://example.com/path?query=1&other=two",
    "user@example.com wrote: hello",
    "C++ and C# are programming languages.",
    "The quick brown fox jumps over the lazy dog.",
    "A quick brown dog jumps over the lazy fox.",
    "It was the best of times, it was the worst of times.",
    " ".join(["word"] * 300),  # truncated at 256 tokens
    " ".join(f"token{i}" for i in range(200)),
    "She sells sea shells by the sea shore.",
    "To be, or not to be: that is the question.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
]


def ferry_embed(tool, model_dir, texts):
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
    out = subprocess.run([tool, "embed", model_dir], input=stdin, capture_output=True, text=True,
                         check=True).stdout
    return np.array([[float(x) for x in line.split()] for line in out.strip("\n").split("\n")])


def lowest_cosine(tool, model_dir, texts=SENTENCES):
    got = ferry_embed(tool, model_dir, texts)
    want = minilm_numpy.embed(model_dir, texts)
    assert got.shape == want.shape, (got.shape, want.shape)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    worst = int(np.argmin(cos))
    return float(cos[worst]), texts[worst], float(np.abs(got - want).max())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    args = parser.parse_args()
    cos, text, max_abs = lowest_cosine(args.tool, args.model)
    print(f"embeddings: {len(SENTENCES)} sentences, lowest cosine {cos:.9f} ({text[:40]!r}), "
          f"max |diff| {max_abs:.2e}")
    return 0 if cos >= args.min_cosine else 1


if __name__ == "__main__":
    sys.exit(main())
