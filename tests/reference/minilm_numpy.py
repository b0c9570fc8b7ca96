#!/usr/bin/env python3
"""A NumPy reference forward pass of a sentence-transformers BERT model (all-MiniLM-L6-v2).

Written from the BERT definition, independently of ferry's C++: HF tokenizers' BertWordPiece
tokenizer from the folder's vocab.txt, embeddings + LayerNorm, post-LN transformer layers with
exact-erf GELU over a padded batch with an attention mask, masked mean pooling, L2
normalisation; float64 throughout. Loads the weights with safetensors.numpy.

embed(model_dir, texts) -> np.ndarray [len(texts), hidden]
"""

import json
import math
import os

import numpy as np


def _erf(x):
    """erf to ~1e-13 (NumPy has none): its Maclaurin series where |x| <= 3, math.erf beyond."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) <= 3.0
    xs = x[small]
    x2 = xs * xs
    term = xs.copy()            # (-1)^n x^(2n+1) / n!
    total = xs.copy()           # sum of term / (2n + 1)
    for n in range(1, 48):
        term *= -x2 / n
        total += term / (2 * n + 1)
    out = np.empty_like(x)
    out[small] = total * (2.0 / math.sqrt(math.pi))
    out[~small] = np.vectorize(math.erf, otypes=[np.float64])(x[~small])
    return out


def _layer_norm(x, g, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


class MiniLM:
    def __init__(self, model_dir):
        from safetensors.numpy import load_file
        from tokenizers import BertWordPieceTokenizer
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
            self.max_seq_length = json.load(f)["max_seq_length"]
        assert self.config["model_type"] == "bert" and self.config["hidden_act"] == "gelu"
        raw = load_file(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in raw.items() if v.dtype != np.int64}
        self.tokenizer = BertWordPieceTokenizer(
            os.path.join(model_dir, "vocab.txt"), clean_text=True, handle_chinese_chars=True,
            strip_accents=True, lowercase=True)
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def token_ids(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def embed_ids(self, batch_ids):
        c, w = self.config, self.w
        h, heads = c["hidden_size"], c["num_attention_heads"]
        d, eps = h // heads, c["layer_norm_eps"]
        n, t = len(batch_ids), max(len(i) for i in batch_ids)
        ids = np.zeros((n, t), dtype=np.int64)
        mask = np.zeros((n, t), dtype=np.float64)
        for i, seq in enumerate(batch_ids):
            ids[i, :len(seq)] = seq
            mask[i, :len(seq)] = 1.0
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # padding keys get no attention

        def lin(v, name):
            # As a 2-D product with a contiguous W^T, so that NumPy hands it to BLAS.
            wt = np.ascontiguousarray(w[name + ".weight"].T)
            return (v.reshape(-1, v.shape[-1]) @ wt).reshape(*v.shape[:-1], -1) + w[name + ".bias"]

        def split(v):
            return v.reshape(n, t, heads, d).transpose(0, 2, 1, 3)

        for layer in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{layer}."
            q = split(lin(x, p + "attention.self.query"))
            k = split(lin(x, p + "attention.self.key"))
            v = split(lin(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, h)
            x = _layer_norm(lin(ctx, p + "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            f = lin(x, p + "intermediate.dense")
            f = 0.5 * f * (1.0 + _erf(f / math.sqrt(2.0)))
            x = _layer_norm(lin(f, p + "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed(self, texts, group=8):
        """Embeds in padded batches of `group` texts of similar length (less padding)."""
        ids = self.token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), self.config["hidden_size"]))
        for k in range(0, len(order), group):
            part = order[k:k + group]
            out[part] = self.embed_ids([ids[i] for i in part])
        return out


def embed(model_dir, texts):
    return MiniLM(model_dir).embed(texts)


if __name__ == "__main__":
    import sys
    folder = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
    e = embed(folder, ["A man is eating food.", "A man is eating a piece of bread."])
    print(e.shape, float(e[0] @ e[1]))
