"""Build an ONNX graph of the MiniLM encoder straight from the safetensors weights (no torch).

The graph uses onnxruntime's fused transformer operators (`com.microsoft`
Attention, SkipLayerNormalization, BiasGelu), the form its own BERT optimizer
produces, and ends in mean pooling and L2 normalisation, so one `run` call
returns finished sentence vectors. The result is checked against
`rag.embedders.reference` in the tests.
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
_MS = "com.microsoft"


class _GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, domain: str = "", **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, domain=domain, **attrs))
        return output


def build_model(weights: Weights | None = None) -> onnx.ModelProto:
    """(input_ids, attention_mask) int64 [batch, seq] -> embeddings float32 [batch, 384], unit length."""
    w = weights if weights is not None else load_weights()
    config = model_config()
    eps = float(config["layer_norm_eps"])
    heads = int(config["num_attention_heads"])
    g = _GraphBuilder()

    # Embeddings: words + positions [0, seq) + token type 0, then LayerNorm.
    words = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"],
                 "words")
    seq_len = g.op("Slice", [g.op("Shape", ["input_ids"], "ids_shape"), g.const("one", np.array([1])),
                             g.const("two", np.array([2]))], "seq_len")
    positions = g.op("Slice", [g.const("position_embeddings", w["embeddings.position_embeddings.weight"]),
                               g.const("zero", np.array([0])), seq_len, g.const("axis0", np.array([0]))],
                     "positions")
    summed = g.op("Add", [g.op("Add", [words, positions], "words_positions"),
                          g.const("token_type0", w["embeddings.token_type_embeddings.weight"][0])], "embed_sum")
    hidden = g.op("LayerNormalization", [summed, g.const("emb_ln_w", w["embeddings.LayerNorm.weight"]),
                                         g.const("emb_ln_b", w["embeddings.LayerNorm.bias"])],
                  "embed_out", axis=-1, epsilon=eps)
    mask_i32 = g.op("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}"
        qkv_weight = np.concatenate(
            [w[f"{p}.attention.self.{part}.weight"].T for part in ("query", "key", "value")], axis=1
        )
        qkv_bias = np.concatenate([w[f"{p}.attention.self.{part}.bias"] for part in ("query", "key", "value")])
        context = g.op("Attention", [hidden, g.const(f"l{layer}_qkv_w", qkv_weight),
                                     g.const(f"l{layer}_qkv_b", qkv_bias), mask_i32],
                       f"l{layer}_context", domain=_MS, num_heads=heads)
        attn_out = g.op("MatMul", [context, g.const(f"l{layer}_ao_w", w[f"{p}.attention.output.dense.weight"].T)],
                        f"l{layer}_attn_proj")
        hidden = g.op("SkipLayerNormalization",
                      [attn_out, hidden, g.const(f"l{layer}_aln_w", w[f"{p}.attention.output.LayerNorm.weight"]),
                       g.const(f"l{layer}_aln_b", w[f"{p}.attention.output.LayerNorm.bias"]),
                       g.const(f"l{layer}_ao_b", w[f"{p}.attention.output.dense.bias"])],
                      f"l{layer}_attn_ln", domain=_MS, epsilon=eps)
        inter = g.op("MatMul", [hidden, g.const(f"l{layer}_i_w", w[f"{p}.intermediate.dense.weight"].T)],
                     f"l{layer}_inter")
        gelu = g.op("BiasGelu", [inter, g.const(f"l{layer}_i_b", w[f"{p}.intermediate.dense.bias"])],
                    f"l{layer}_gelu", domain=_MS)
        out = g.op("MatMul", [gelu, g.const(f"l{layer}_o_w", w[f"{p}.output.dense.weight"].T)], f"l{layer}_out")
        hidden = g.op("SkipLayerNormalization",
                      [out, hidden, g.const(f"l{layer}_oln_w", w[f"{p}.output.LayerNorm.weight"]),
                       g.const(f"l{layer}_oln_b", w[f"{p}.output.LayerNorm.bias"]),
                       g.const(f"l{layer}_o_b", w[f"{p}.output.dense.bias"])],
                      f"l{layer}_ffn_ln", domain=_MS, epsilon=eps)

    # Mean over real tokens, then unit length.
    mask_f = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT),
                                g.const("axis_last", np.array([-1]))], "mask_f3")
    token_sum = g.op("ReduceSum", [g.op("Mul", [hidden, mask_f], "masked"), g.const("axis1", np.array([1]))],
                     "token_sum", keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [mask_f, g.const("axis1b", np.array([1]))], "count_raw", keepdims=0),
                         g.const("min_count", np.array(1e-9, dtype=np.float32))], "count")
    mean = g.op("Div", [token_sum, count], "mean")
    norm = g.op("Max", [g.op("ReduceL2", [mean, g.const("axis1c", np.array([1]))], "norm_raw", keepdims=1),
                        g.const("min_norm", np.array(1e-12, dtype=np.float32))], "norm")
    g.op("Div", [mean, norm], "embeddings")

    graph = helper.make_graph(
        g.nodes,
        "minilm_l6_v2",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
         for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 384])],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(_MS, 1)], producer_name="repolens"
    )
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


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 weights for every projection except the FFN output.

    That one multiplies GELU outputs whose long tail int8 cannot hold; leaving it
    in float keeps vectors at cosine >= 0.99 to the float model on real code.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source), load_external_data=False)
    keep_float = [node.name for node in model.graph.node if node.name.endswith("_out")]
    with _atomic_target(target) as tmp, _quiet_root_logger():
        quantize_dynamic(
            source,
            tmp,
            weight_type=QuantType.QUInt8,
            per_channel=True,
            nodes_to_exclude=keep_float,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return target
