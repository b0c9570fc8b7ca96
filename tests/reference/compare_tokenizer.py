#!/usr/bin/env python3
"""Compares ferry's WordPiece tokenizer with the Hugging Face `tokenizers` library.

Both load the same vocab.txt; the reference is BertWordPieceTokenizer (BertNormalizer with
clean_text, handle_chinese_chars, strip_accents and lowercase; BertPreTokenizer; WordPiece;
[CLS] … [SEP]) truncated to max_seq_length. ferry's side runs through `ferry-embed-tool
tokenize`. Prints the number of strings whose ids differ (and the first few differences) and
exits 1 when any differ.

Usage: compare_tokenizer.py --tool BUILD/kernels/ferry-embed-tool --vocab MODEL/vocab.txt
       [--max-seq-length 256] [--sweep]
--sweep also tokenizes every code point (in groups) and reports how many groups differ: the
reference's Unicode category tables are older than utf8proc's, see kernels/wordpiece.h.
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus  # noqa: E402


def reference_tokenizer(vocab, max_seq_length):
    from tokenizers import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(vocab, clean_text=True, handle_chinese_chars=True,
                                 strip_accents=True, lowercase=True)
    tok.enable_truncation(max_length=max_seq_length)
    return tok


def ferry_ids(tool, vocab, max_seq_length, texts):
    stdin = "".join(t.encode("utf-8", "surrogatepass").hex() + "\n" for t in texts)
    out = subprocess.run([tool, "tokenize", vocab, str(max_seq_length)], input=stdin,
                         capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")[:-1]
    assert len(lines) == len(texts), (len(lines), len(texts))
    return [[int(x) for x in line.split()] if not line.startswith("error") else line
            for line in lines]


def compare(tool, vocab, max_seq_length, texts):
    """Returns [(text, ferry ids, reference ids)] for every text whose ids differ."""
    ref = [e.ids for e in reference_tokenizer(vocab, max_seq_length).encode_batch(texts)]
    got = ferry_ids(tool, vocab, max_seq_length, texts)
    return [(t, g, r) for t, g, r in zip(texts, got, ref) if g != r]


def sweep_texts(group=16):
    """Every code point but surrogates, `group` per text, each between two letters."""
    texts, cur = [], []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        cur.append("a" + chr(c) + "b")
        if len(cur) == group:
            texts.append(" ".join(cur))
            cur = []
    if cur:
        texts.append(" ".join(cur))
    return texts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    texts = tokenizer_corpus.corpus()
    bad = compare(args.tool, args.vocab, args.max_seq_length, texts)
    print(f"tokenizer: {len(texts)} strings, {len(bad)} mismatches")
    for t, g, r in bad[:10]:
        print(f"  {t!r}\n    ferry {g}\n    ref   {r}")
    status = 1 if bad else 0
    if args.sweep:
        st = sweep_texts()
        bad_groups = compare(args.tool, args.vocab, args.max_seq_length, st)
        # Then each code point of a differing group on its own.
        singles = [w for t, _, _ in bad_groups for w in t.split(" ")]
        bad_cps = [t[1] for t, _, _ in compare(args.tool, args.vocab, args.max_seq_length,
                                               singles)]
        print(f"sweep: every code point in {len(st)} groups of 16; {len(bad_groups)} groups and "
              f"{len(bad_cps)} code points tokenize differently:")
        print("  " + " ".join(f"U+{ord(c):04X}" for c in bad_cps))
    return status


if __name__ == "__main__":
    sys.exit(main())
