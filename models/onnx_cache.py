"""Networks as ONNX graphs, so the onnxruntime path never imports torch (1-2.5 s at start).

A weights file's whole inference graph (uint8 crops in, points out: the normalisation and the decode
are inside) ships beside the shipped weights (models/weights/onnx, written by `hihtrack export
--shipped`; a test fails when one is missing or stale). Any other weights file is exported with
torch on its first use, once, into the user's cache. A graph's file name carries the weights' hash,
so new weights never meet an old graph, and its metadata carries the facts a caller needs (input
size, crop scale, points).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.weights import check_weights_file, file_sha256


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/hihtrack/onnx (~/.cache/...), or the temp folder where that cannot be written."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hihtrack" / "onnx"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        return Path(tempfile.gettempdir())


SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "onnx"


def cached_graph(weights: str | Path, variant: str, export: Callable[[Path], None], folder: Path | None = None) -> Path:
    """The ONNX graph of `weights` (one per `variant`, e.g. a decode): the shipped one, or the cached
    one, else exported by `export(path)` into `folder` (default: the user's cache). The export goes
    to a temporary name first, so a crash or a second process never leaves a half-written graph."""
    weights = check_weights_file(weights)
    name = f"{weights.stem}-{file_sha256(weights)[:16]}-{variant}.onnx"
    if folder is None and (SHIPPED_DIR / name).exists():
        return SHIPPED_DIR / name
    path = (folder or cache_dir()) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        export(tmp)
        tmp.replace(path)
    return path


@dataclass
class OnnxGraph:
    """An onnxruntime CPU session and the facts stored with its graph."""

    session: object
    facts: dict

    @classmethod
    def load(cls, path: Path, threads: int) -> "OnnxGraph":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cls(session, json.loads(session.get_modelmeta().custom_metadata_map.get("hihtrack", "{}")))

    def __call__(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N,S,S,3) uint8 BGR crops -> the graph's one output."""
        return self.session.run(None, {"crops": np.ascontiguousarray(crops_u8)})[0]
