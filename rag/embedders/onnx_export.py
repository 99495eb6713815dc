"""Build an ONNX graph of the MiniLM encoder straight from the safetensors weights (no torch).

The graph uses onnxruntime's fused `com.microsoft` Attention and BiasGelu (the form
its own BERT optimizer produces; LayerNorm stays unfused, which is faster on CPU),
splits each FFN into an int8-friendly part and a float outlier branch, and ends in
mean pooling and L2 normalisation, so one `run` call returns finished sentence vectors.
The result is checked against `rag.embedders.reference` in the tests.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rag.embedders.minilm import model_config
from rag.embedders.reference import Weights, load_weights

OPSET = 18
FLOAT_SUFFIX = "_float"  # nodes `quantize_int8` keeps in float
FFN_DOWN_SUFFIX = "_down"  # the FFN output projections (both branches)
_MS = "com.microsoft"
# Intermediate (GELU output) channels of each layer whose activations reach 13-24 on code while all
# others stay under ~8: one such channel would set the int8 scale of the whole FFN-down input and
# flatten everything else to a few levels. Their slice of the FFN runs in float (a 384 x k and a
# k x 384 product), the rest in int8. Found on RepoLens's and pydantic's source (channel absmax > 2x
# the 99th percentile of the layer's channel maxima); `tests/test_embedders.py` checks they still stand out.
OUTLIER_CHANNELS: dict[int, tuple[int, ...]] = {0: (856,), 1: (607,), 2: (1004, 218), 3: (358,), 5: (1302,)}


class _GraphBuilder:
    """Collects nodes and initializers; weights are registered under their safetensors names."""

    def __init__(self, weights: Weights, eps: float) -> None:
        self.weights = weights
        self.eps = eps
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def param(self, key: str) -> str:
        return self.const(key, self.weights[key])

    def op(self, op_type: str, inputs: list[str], output: str, domain: str = "", **attrs: object) -> str:
        node = helper.make_node(op_type, inputs, [output], name=output, domain=domain, **attrs)  # type: ignore[arg-type]
        self.nodes.append(node)
        return output

    def matmul(self, x: str, dense: str, output: str) -> str:
        """x @ W.T without the bias, which the following op adds."""
        weight = self.const(f"{dense}.weight.T", self.weights[f"{dense}.weight"].T)
        return self.op("MatMul", [x, weight], output)

    def add_norm(self, x: str, residual: str, dense: str, norm: str, output: str) -> str:
        """LayerNorm(x + dense bias + residual) as two Adds and a LayerNormalization: onnxruntime's
        CPU SkipLayerNormalization is ~5x slower than the three (it must stay unfused, see local.py)."""
        biased = self.op("Add", [x, self.param(f"{dense}.bias")], f"{output}_bias")
        summed = self.op("Add", [biased, residual], f"{output}_skip")
        norm_params = [self.param(f"{norm}.weight"), self.param(f"{norm}.bias")]
        return self.op("LayerNormalization", [summed, *norm_params], output, axis=-1, epsilon=self.eps)

    def ffn(self, x: str, prefix: str, outliers: tuple[int, ...], output: str) -> str:
        """GELU(x @ Wup.T + b) @ Wdown.T (no bias), the `outliers` channels in a float side branch."""
        up = self.weights[f"{prefix}.intermediate.dense.weight"]
        down = self.weights[f"{prefix}.output.dense.weight"]
        bias = self.weights[f"{prefix}.intermediate.dense.bias"]
        branches = [("", np.setdiff1d(np.arange(up.shape[0]), outliers))]
        if outliers:
            branches.append((FLOAT_SUFFIX, np.array(outliers)))
        parts = []
        for suffix, channels in branches:
            name = f"{output}{suffix}"
            inner = self.op("MatMul", [x, self.const(f"{prefix}.up{suffix}", up[channels].T)], f"{name}_up")
            up_bias = self.const(f"{prefix}.up_bias{suffix}", bias[channels])
            gelu = self.op("BiasGelu", [inner, up_bias], f"{name}_gelu", domain=_MS)
            down_weight = self.const(f"{prefix}.down{suffix}", down[:, channels].T)
            parts.append(self.op("MatMul", [gelu, down_weight], f"{name}{FFN_DOWN_SUFFIX}"))
        return parts[0] if len(parts) == 1 else self.op("Add", parts, output)

    def attention(self, x: str, prefix: str, mask: str, heads: int, output: str) -> str:
        """Fused self-attention; its weight is [Wq.T | Wk.T | Wv.T]."""
        parts = [f"{prefix}.{part}" for part in ("query", "key", "value")]
        weight = np.concatenate([self.weights[f"{part}.weight"].T for part in parts], axis=1)
        bias = np.concatenate([self.weights[f"{part}.bias"] for part in parts])
        inputs = [x, self.const(f"{prefix}.qkv.weight", weight), self.const(f"{prefix}.qkv.bias", bias), mask]
        return self.op("Attention", inputs, output, domain=_MS, num_heads=heads)


def build_model(weights: Weights | None = None) -> onnx.ModelProto:
    """(input_ids, attention_mask) int64 [batch, seq] -> embeddings float32 [batch, 384], unit length."""
    config = model_config()
    g = _GraphBuilder(weights if weights is not None else load_weights(), float(config["layer_norm_eps"]))
    heads = int(config["num_attention_heads"])
    axis = {
        name: g.const(name, np.array([value])) for name, value in (("axis0", 0), ("axis1", 1), ("axis2", 2))
    }

    # Embeddings: words + positions [0, seq) + token type 0, then LayerNorm.
    words = g.op("Gather", [g.param("embeddings.word_embeddings.weight"), "input_ids"], "words")
    seq_len = g.op(
        "Slice", [g.op("Shape", ["input_ids"], "ids_shape"), axis["axis1"], axis["axis2"]], "seq_len"
    )
    positions = g.op(
        "Slice",
        [g.param("embeddings.position_embeddings.weight"), axis["axis0"], seq_len, axis["axis0"]],
        "positions",
    )
    token_type = g.const("token_type0", g.weights["embeddings.token_type_embeddings.weight"][0])
    summed = g.op("Add", [g.op("Add", [words, positions], "words_positions"), token_type], "embed_sum")
    norm = [g.param("embeddings.LayerNorm.weight"), g.param("embeddings.LayerNorm.bias")]
    hidden = g.op("LayerNormalization", [summed, *norm], "embed_out", axis=-1, epsilon=g.eps)
    mask_i32 = g.op("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)

    for layer in range(int(config["num_hidden_layers"])):
        p, n = f"encoder.layer.{layer}", f"l{layer}"
        context = g.attention(hidden, f"{p}.attention.self", mask_i32, heads, f"{n}_context")
        projected = g.matmul(context, f"{p}.attention.output.dense", f"{n}_attn_proj")
        hidden = g.add_norm(
            projected,
            hidden,
            f"{p}.attention.output.dense",
            f"{p}.attention.output.LayerNorm",
            f"{n}_attn_norm",
        )
        down = g.ffn(hidden, p, OUTLIER_CHANNELS.get(layer, ()), f"{n}_ffn")
        hidden = g.add_norm(down, hidden, f"{p}.output.dense", f"{p}.output.LayerNorm", f"{n}_ffn_norm")

    # Mean over real tokens, then unit length.
    mask = g.op(
        "Unsqueeze",
        [g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT), axis["axis2"]],
        "mask3",
    )
    total = g.op("ReduceSum", [g.op("Mul", [hidden, mask], "masked"), axis["axis1"]], "token_sum", keepdims=0)
    count = g.op("ReduceSum", [mask, axis["axis1"]], "token_count", keepdims=0)
    tiny = g.const("tiny", np.array(1e-9, dtype=np.float32))
    mean = g.op("Div", [total, g.op("Max", [count, tiny], "safe_count")], "mean")
    length = g.op("ReduceL2", [mean, axis["axis1"]], "length", keepdims=1)
    g.op("Div", [mean, g.op("Max", [length, tiny], "safe_length")], "embeddings")

    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask")
    ]
    outputs = [
        helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", int(config["hidden_size"])])
    ]
    graph = helper.make_graph(g.nodes, "all_minilm_l6_v2", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(_MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="repolens")
    onnx.checker.check_model(model)
    return model


@contextmanager
def _atomic_target(path: Path) -> Iterator[str]:
    """A temporary name beside `path`, renamed onto it on success: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared model dir must be readable by all
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs an irrelevant pre-processing hint through the root logger; hide it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def write_model(model: onnx.ModelProto, path: Path) -> Path:
    with _atomic_target(path) as tmp:
        onnx.save_model(model, tmp)
    return path


def quantize_int8(source: Path, target: Path, *, ffn_down_in_float: bool = False) -> Path:
    """Dynamic int8 weights (per output channel) for the projections; activations are quantised per run.

    Signed 7-bit weights (`reduce_range`) use the fast u8·s8 kernels of AVX2 CPUs without their
    16-bit overflow, so one file serves every x86 CPU. The outlier channels of each FFN stay in
    float (`OUTLIER_CHANNELS`); without them the FFN-down input would need float to keep a cosine
    >= 0.99 to the float model, which `ffn_down_in_float` does (the `minilm-l6-v2-int8` model of
    graph version 2, ~1.5x slower; kept so indexes built with it stay searchable).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source), load_external_data=False)
    if ffn_down_in_float:
        keep_float = [node.name for node in model.graph.node if node.name.endswith(FFN_DOWN_SUFFIX)]
    else:
        keep_float = [node.name for node in model.graph.node if FLOAT_SUFFIX in node.name]
    with _atomic_target(target) as tmp, _quiet_root_logger():
        quantize_dynamic(
            source,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            nodes_to_exclude=keep_float,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return target
