"""The HIH inference engine: face boxes -> crops -> sub-pixel landmarks, on CPU or CUDA.

The engine owns the crop geometry (crop matrices, the averaged crop views, back to image px) and
hands uint8 crops to a runner:
    onnxruntime (CPU default)  the whole inference graph as a cached ONNX file (models/onnx_cache.py):
                               no torch import at run time once the graph is cached
    torch                      the same graph on torch (models/torch_runner.py): CPU, or CUDA through
                               a ring of streams that overlaps upload, compute and download
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import crop
from models.schema import WeightsError
from models.schemes import scheme_for

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# the shipped weights by name (--weights small|fast|PATH); see models/weights/MODEL_CARD.md
SHIPPED_WEIGHTS = {"small": _WEIGHTS_DIR / "hih_small_300w.pt", "fast": _WEIGHTS_DIR / "hih_fast_300w.pt"}
DEFAULT_WEIGHTS_NAME = "fast"      # 0.6x the cost of small, 0.04 NME behind it on 300-W (MODEL_CARD.md)
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS[DEFAULT_WEIGHTS_NAME]
BACKENDS = ("onnxruntime", "torch")


def weights_path(spec: str | Path | None) -> Path:
    """A shipped name, a file path, or None (the default weights) -> the file."""
    return DEFAULT_WEIGHTS if spec is None else SHIPPED_WEIGHTS.get(str(spec), Path(spec))


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU. Asked of torch only where an NVIDIA driver is installed:
    importing torch costs 1.5-2.5 s of start-up that a CPU-only machine need not pay."""
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return False
    import torch
    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda[:i]' -> 'cpu' or 'cuda[:i]', checked."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise WeightsError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


def auto_threads() -> int:
    """CPU inference threads for 0 (auto): all cores but one, left to capture, detection, smoothing and
    a file's look-ahead (a second call on the next frame: two 1-thread calls at once take 2.4 ms a face
    on 2 cores, on 2-thread sessions 3.1). A live source gains nothing from more either: a paced camera's
    latency p50 was the same on 1 and 2 threads without thread spinning (8.1-9.1 against 8.3-8.8 ms), and
    with it 0.5-1 ms lower at the cost of 4-5 ms more at p95 (bench/RESULTS.md, End to end)."""
    return max(1, (os.cpu_count() or 2) - 1)


def auto_views(device: str) -> int:
    """Crop views for 0 (auto): a second view is free on a GPU (bench speed: batch 2 costs what batch 1
    does) and costs 1.7x on a CPU."""
    return 2 if device.startswith("cuda") else 1


class OnnxRunner:
    """The inference graph on onnxruntime (CPU): (B,S,S,3) uint8 BGR crops -> (B,K,3) x, y, confidence.
    `submit` runs at once (a CPU has nothing to overlap it with); `collect` hands its result over."""

    def __init__(self, weights: Path, threads: int = 0, decode: str | None = None):
        from models.onnx_cache import OnnxGraph
        self.graph = OnnxGraph.load(self.graph_path(weights, decode), threads)
        self.facts = self.graph.facts

    @staticmethod
    def graph_path(weights: Path, decode: str | None = None, folder: Path | None = None) -> Path:
        """The weights' ONNX graph: shipped, cached, or exported now (models/onnx_cache.py)."""
        from models.onnx_cache import cached_graph

        def export(path: Path) -> None:       # torch is imported only here, once per weights file
            from models.torch_runner import export_graph
            export_graph(weights, path, decode)

        return cached_graph(weights, f"points-{decode or 'default'}", export, folder)

    def __call__(self, crops_u8: np.ndarray) -> np.ndarray:
        return self.graph(crops_u8)

    submit = __call__

    @staticmethod
    def collect(result: np.ndarray) -> np.ndarray:
        return result


# The crops averaged per face, as (dx, dy) offsets in heatmap cells and a mirror flag: staggered by half
# a cell, so one view's cell quantisation falls mid-cell in the other, and mirrored, so the network's
# left-right biases cancel (the mirrored view's points are relabelled left <-> right).
VIEWS = {1: [(0.0, 0.0, False)],
         2: [(-0.25, -0.25, False), (0.25, 0.25, True)],
         4: [(-0.25, -0.25, False), (0.25, 0.25, False), (-0.25, 0.25, True), (0.25, -0.25, True)]}


class LandmarkEngine:
    """Face crops in, landmarks in image px out; `runner` is where the network runs (module doc)."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", precision: str = "fp32",
                 streams: int = 2, threads: int = 0, decode: str | None = None, max_batch: int = 16,
                 backend: str = "torch", views: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.weights_path = weights_path(weights)
        self.device = resolve_device(device)
        if backend == "onnxruntime" and self.device == "cpu":
            self.runner = OnnxRunner(self.weights_path, threads or auto_threads(), decode)
        else:
            from models.torch_runner import TorchRunner
            self.runner = TorchRunner(self.weights_path, self.device, precision, streams, threads, decode, max_batch)
        facts = self.runner.facts
        self.input_px, self.crop_scale = int(facts["input_px"]), float(facts["crop_scale"])
        self.num_points, self.stride = int(facts["num_points"]), float(facts["stride"])
        self.max_batch = max_batch
        views = views or auto_views(self.device)
        if views not in VIEWS:
            raise ValueError(f"views must be one of {sorted(VIEWS)}, not {views}")
        self.views = VIEWS[views]
        self._mirrored = np.array([flip for *_, flip in self.views])
        self._flip_perm = np.asarray(scheme_for(self.num_points).flip)

    # ---- crops ------------------------------------------------------------------------------
    def crop_matrices(self, centers_px: np.ndarray, sides_px: np.ndarray) -> np.ndarray:
        """(N,2), (N,) landmark-extent squares -> (N,2,3) image->crop matrices."""
        return np.stack([crop.similarity(c, s * self.crop_scale, self.input_px) for c, s in zip(centers_px, sides_px)])

    def crops(self, image_bgr: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """One cv2.warpAffine per face -> (N,S,S,3) uint8 BGR."""
        return np.stack([crop.warp(image_bgr, m, self.input_px) for m in matrices])

    def _view_matrices(self, matrices: np.ndarray) -> np.ndarray:
        """(N,2,3) -> (N*V,2,3): each face's crop matrix per view (offset in crop px, mirrored about the crop centre)."""
        vm = np.repeat(matrices, len(self.views), axis=0)
        for k, (dx, dy, flip) in enumerate(self.views):
            sel = vm[k::len(self.views)]
            if flip:
                sel[:, 0] = -sel[:, 0]
                sel[:, 0, 2] += self.input_px - 1
            sel[:, :, 2] += np.array([dx, dy]) * self.stride
        return vm

    # ---- network ----------------------------------------------------------------------------
    def infer(self, crops_u8) -> tuple[np.ndarray, np.ndarray]:
        """(N,S,S,3) uint8 BGR crops (a host array, or a tensor already on the runner's device) ->
        landmarks in crop px (N,K,2), confidence (N,K); run in chunks of max_batch."""
        outs = [self.runner(crops_u8[i:i + self.max_batch]) for i in range(0, len(crops_u8), self.max_batch)]
        res = np.concatenate(outs) if outs else np.zeros((0, self.num_points, 3), np.float32)
        return res[..., :2], res[..., 2]

    def landmarks(self, image_bgr: np.ndarray, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole landmark stage: crop -> infer -> decode -> back to image px (N,K,2), (N,K).

        With several views (VIEWS) each face is cropped at staggered sub-cell offsets and mirrored,
        in one batch, and the views' landmarks are averaged in image px (crop-position spread and
        NME both drop: bench/RESULTS.md, Steadiness).
        """
        return self.landmarks_many([(image_bgr, matrices)])[0]

    def landmarks_many(self, items: list[tuple[np.ndarray, np.ndarray]],
                       device_crops: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The landmark stage for the faces of several frames (e.g. of different videos) as one network
        batch: [(image, (N,2,3) matrices)] -> [((N,K,2) image px, (N,K) confidence)]."""
        return self.collect_many(self.submit_many(items, device_crops))

    def submit_many(self, items: list[tuple[np.ndarray, np.ndarray]], device_crops: bool | None = None) -> "Pending":
        """landmarks_many's first half: crops made and the batch handed to the runner, which on CUDA
        returns at once (its stream ring uploads, computes and downloads while the caller goes on);
        collect_many waits for it. Crops are cut on the device by a torch runner on a GPU
        (device_crops=None), with OpenCV on the host otherwise."""
        device_crops = self.device.startswith("cuda") if device_crops is None else device_crops
        views = [self._view_matrices(np.asarray(m, np.float64).reshape(-1, 2, 3)) for _, m in items]
        todo = [(img, vm) for (img, _), vm in zip(items, views) if len(vm)]
        if not todo:
            return Pending(views, None)
        if device_crops:
            return Pending(views, self.runner.submit_frames(todo))
        return Pending(views, self.runner.submit(np.concatenate([self.crops(img, vm) for img, vm in todo])))

    def collect_many(self, pending: "Pending") -> list[tuple[np.ndarray, np.ndarray]]:
        if pending.handle is None:
            res = np.zeros((0, self.num_points, 3), np.float32)
        else:
            res = self.runner.collect(pending.handle)
        pts, conf = res[..., :2], res[..., 2]
        v, out, start, mirrored = len(self.views), [], 0, self._mirrored
        for vm in pending.views:
            n, stop = len(vm) // v, start + len(vm)
            p, c = pts[start:stop].reshape(n, v, self.num_points, 2), conf[start:stop].reshape(n, v, self.num_points)
            p[:, mirrored], c[:, mirrored] = p[:, mirrored][:, :, self._flip_perm], c[:, mirrored][:, :, self._flip_perm]
            inv = np.stack([crop.invert(m) for m in vm]).reshape(n, v, 2, 3) if n else np.zeros((0, v, 2, 3))
            image_pts = crop.transform_points(inv, p.astype(np.float64))
            out.append((image_pts.mean(1).astype(np.float32), c.mean(1)))
            start = stop
        return out


@dataclass
class Pending:
    """A landmark batch handed to the runner: each item's view matrices and the runner's handle."""
    views: list[np.ndarray]
    handle: object
