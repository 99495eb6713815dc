"""A plain numpy forward pass of the BERT encoder: the readable definition of the model.

The ONNX graph in `onnx_export` is checked against it; it needs nothing but
numpy and the safetensors weights, so it also serves when onnxruntime is missing.
"""

from __future__ import annotations

import math

import numpy as np
from safetensors.numpy import load_file

from rag.embedders.base import l2_normalize
from rag.embedders.minilm import model_config, package_model_dir

Weights = dict[str, np.ndarray]


def load_weights() -> Weights:
    return load_file(str(package_model_dir() / "model.safetensors"))


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7); numpy has no erf of its own."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: np.ndarray = sign * (1.0 - poly * np.exp(-x * x))
    return result


def _layer_norm(x: np.ndarray, weights: Weights, prefix: str, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normalised = (x - mean) / np.sqrt(var + eps)
    result: np.ndarray = normalised * weights[f"{prefix}.weight"] + weights[f"{prefix}.bias"]
    return result


def _dense(x: np.ndarray, weights: Weights, prefix: str) -> np.ndarray:
    return x @ weights[f"{prefix}.weight"].T + weights[f"{prefix}.bias"]


class NumpyForward:
    """`Forward` for `MiniLMEmbedder`: (ids, mask) -> pooled, normalised vectors."""

    def __init__(self, weights: Weights | None = None) -> None:
        self.weights = weights if weights is not None else load_weights()
        config = model_config()
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.weights
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w, "embeddings.LayerNorm", self.eps)
        hidden = x.shape[-1]
        head_size = hidden // self.heads
        bias = ((1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min).astype(np.float32)
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(batch, length, self.heads, head_size).transpose(0, 2, 1, 3)

            q = split(_dense(x, w, f"{p}.attention.self.query"))
            k = split(_dense(x, w, f"{p}.attention.self.key"))
            v = split(_dense(x, w, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_size) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = scores / scores.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
            x = _layer_norm(
                x + _dense(context, w, f"{p}.attention.output.dense"),
                w,
                f"{p}.attention.output.LayerNorm",
                self.eps,
            )
            h = _dense(x, w, f"{p}.intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _layer_norm(x + _dense(h, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm", self.eps)
        weights_mask = mask[:, :, None].astype(np.float32)
        pooled = (x * weights_mask).sum(axis=1) / np.maximum(weights_mask.sum(axis=1), 1e-9)
        return l2_normalize(pooled)
