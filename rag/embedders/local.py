"""The default offline embedder: MiniLM through onnxruntime, from a derived ONNX file.

The ONNX file is built from the packaged weights by `repolens setup` (run by
`make install`) into `REPOLENS_MODEL_DIR`, else `<sys.prefix>/share/repolens/models`,
else `$REPOLENS_HOME/models`; if it is missing at first use it is built then
(a few seconds). Builds hold a file lock, so concurrent processes build once.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.embedders.base import EmbedderError
from rag.embedders.minilm import DEFAULT_BATCH_SIZE, MiniLMEmbedder
from rag.settings import Settings

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

GRAPH_VERSION = 3  # bump when onnx_export changes a model file, so stale files are rebuilt
FLOAT_MODEL = "minilm-l6-v2"
INT8_MODEL = "minilm-l6-v2-q8"  # every projection int8 but the FFN outlier channels (onnx_export)
# The default until graph version 3: int8 but the FFN output projections, ~1.5x slower. Its vectors
# differ from INT8_MODEL's (cosine ~0.995), so it keeps its name and indexes built with it stay
# searchable with REPOLENS_EMBEDDING_MODEL=minilm-l6-v2-int8.
LEGACY_INT8_MODEL = "minilm-l6-v2-int8"
DEFAULT_MODEL = INT8_MODEL
LOCAL_MODELS = (FLOAT_MODEL, INT8_MODEL, LEGACY_INT8_MODEL)
# Dynamic quantisation scales each MatMul input by its whole-tensor range, so in a batch a text's
# vector would depend on its neighbours; one text per run keeps every vector a function of its
# text alone (cache hits, queries and documents agree), and 256-token inputs keep the GEMMs efficient.
BATCH_SIZES = {FLOAT_MODEL: DEFAULT_BATCH_SIZE, INT8_MODEL: 1, LEGACY_INT8_MODEL: 1}


# onnxruntime would fuse the graph's Add + Add + LayerNormalization back into SkipLayerNormalization,
# whose CPU kernel is ~5x slower than the three (measured: 0.51 ms vs 0.11 ms on 256 x 384).
UNFUSED = ["SkipLayerNormFusion"]


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def model_dirs(settings: Settings) -> list[Path]:
    """Where derived model files are looked for, in order; the first writable one receives builds."""
    if settings.model_dir is not None:
        return [settings.model_dir.expanduser()]
    return [Path(sys.prefix) / "share" / "repolens" / "models", settings.home / "models"]


def model_filename(model: str) -> str:
    return f"{model}.v{GRAPH_VERSION}.onnx"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    with open(folder / ".build.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(folder: Path, model: str) -> Path:
    from rag.embedders.onnx_export import build_model, quantize_int8, write_model

    target = folder / model_filename(model)
    with _build_lock(folder):
        if target.exists():
            return target
        for leftover in folder.glob(".minilm-*.tmp"):  # from a build that was killed; we hold the lock
            leftover.unlink(missing_ok=True)
        float_path = folder / model_filename(FLOAT_MODEL)
        if not float_path.exists():
            log.info("building the ONNX model %s", float_path)
            write_model(build_model(), float_path)
        if model != FLOAT_MODEL:
            log.info("quantising %s", target)
            quantize_int8(float_path, target, ffn_down_in_float=model == LEGACY_INT8_MODEL)
        for stale in folder.glob("minilm-*.v*.onnx"):  # files of other graph versions
            if not stale.name.endswith(f".v{GRAPH_VERSION}.onnx"):
                stale.unlink(missing_ok=True)
    return target


def ensure_model(settings: Settings, model: str = DEFAULT_MODEL, *, rebuild: bool = False) -> Path:
    """The path of the ONNX file for `model`, building it if no model dir has it yet."""
    if model not in LOCAL_MODELS:
        raise EmbedderError(f"unknown local embedding model {model!r}: use one of {', '.join(LOCAL_MODELS)}")
    folders = model_dirs(settings)
    if not rebuild:
        for folder in folders:
            if (folder / model_filename(model)).is_file():
                return folder / model_filename(model)
    for folder in folders:
        if _writable(folder):
            if rebuild:
                (folder / model_filename(model)).unlink(missing_ok=True)
            return _build(folder, model)
    raise EmbedderError(
        f"cannot write the ONNX model to any of {', '.join(map(str, folders))}: set REPOLENS_MODEL_DIR "
        "to a writable folder"
    )


def session_options() -> onnxruntime.SessionOptions:
    """One thread per run (`MiniLMEmbedder` runs one per core), every graph optimisation but `UNFUSED`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxForward:
    """`Forward` for `MiniLMEmbedder` over an onnxruntime session (whose `run` is thread-safe).

    Each run uses only its caller's thread: `MiniLMEmbedder` runs one batch per core in parallel.
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.path = path
        self._session = ort.InferenceSession(
            str(path), session_options(), providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
        )

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        result: np.ndarray = self._session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]
        return result


@functools.cache
def _open(path: Path, model: str, workers: int | None) -> MiniLMEmbedder:
    """One per process and model file: a session holds ~100 MB and serves every thread."""
    return MiniLMEmbedder(
        OnnxForward(path), name=model, batch_size=BATCH_SIZES[model], workers=workers or available_cpus()
    )


def load_local_embedder(
    settings: Settings, model: str = DEFAULT_MODEL, workers: int | None = None
) -> MiniLMEmbedder:
    """Load (building first if needed); a damaged model file is rebuilt once. Default: a worker per CPU."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

    unreadable = (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile)
    path = ensure_model(settings, model)
    try:
        return _open(path, model, workers)
    except unreadable as error:
        log.warning("the ONNX model %s could not be loaded (%s); rebuilding it", path, error)
    path = ensure_model(settings, model, rebuild=True)
    try:
        return _open(path, model, workers)
    except unreadable as error:
        raise EmbedderError(f"the rebuilt ONNX model {path} cannot be loaded: {error}") from None
