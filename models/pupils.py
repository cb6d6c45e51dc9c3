"""Pupils: two more points per face from a small network on eye crops (as OpenSeeFace's gaze net).

Each eye is cut from the frame around its six iBUG outline points (36-41, then 42-47), levelled on its
corners and EYE_PX square; the second eye is mirrored, so one network serves both. The network is a
few strided convolutions ending in a heatmap whose soft-argmax is the pupil, in crop px.

Labels are pseudo-labels: MediaPipe's refined iris centres (vertices 468 and 473) on the 300-W training
faces and, carried through the pose synthesizer like every other point, on their synthetic views.
Training crops are cut from the *ground-truth* eye outline moved by noise as large as the tracker's own
landmark error, so at run time the predicted outline is enough.
Order (WFLW's convention): the pupil of the eye drawn by 36-41 first, then the one drawn by 42-47.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models import crop

EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
EYE_PX = 32            # crop side, px
EYE_SPAN = 1.8         # crop side / eye-corner distance: the whole eye, the lids and a margin
WEIGHTS = Path(__file__).resolve().parent / "weights" / "pupils_300w.pt"


def eye_geometry(landmarks_px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B,68,2) -> per eye (B,2): crop centres (B,2,2), sides (B,2) and angles (B,2, radians) of the
    squares the eyes are cut from: EYE_SPAN x the corner distance, levelled on the corners."""
    pts = np.stack([landmarks_px[:, list(idx)] for idx in EYES], 1).astype(np.float64)    # (B,2,6,2)
    a, b = pts[:, :, 0], pts[:, :, 3]              # the corners, left to right in the image for both eyes
    width = np.maximum(np.linalg.norm(b - a, axis=-1), 1.0)
    return pts.mean(2), width * EYE_SPAN, np.arctan2(b[..., 1] - a[..., 1], b[..., 0] - a[..., 0])


def eye_crop_matrices(landmarks_px: np.ndarray, jitter: np.ndarray | None = None) -> np.ndarray:
    """(B,68,2) landmarks -> (B,2,2,3) image->crop matrices (models.crop.similarity for each eye, the
    second mirrored).

    jitter (B,2,4): per eye (dx, dy) in corner distances, log-scale, rotation in radians (training)."""
    centre, side, angle = eye_geometry(np.asarray(landmarks_px, np.float64))
    if jitter is not None:
        centre = centre + jitter[..., :2] * (side / EYE_SPAN)[..., None]
        side, angle = side * np.exp(jitter[..., 2]), angle + jitter[..., 3]
    m = [[crop.similarity(centre[i, e], side[i, e], EYE_PX, angle[i, e], flip=e == 1) for e in range(2)]
         for i in range(len(centre))]
    return np.asarray(m, np.float64).reshape(len(centre), 2, 2, 3)


class PupilLocator:
    """Pupils for tracked faces at run time: image + 68 landmarks -> (2,2) px per face.

    The eye network runs as a cached ONNX graph on onnxruntime (uint8 BGR eye crops in, crop px
    out: models.onnx_cache), so tracking needs no torch once the graph is cached."""

    def __init__(self, weights: str | Path = WEIGHTS, threads: int = 1):
        from models.onnx_cache import OnnxGraph
        self.graph = OnnxGraph.load(self.graph_path(Path(weights)), threads)

    @staticmethod
    def graph_path(weights: Path = WEIGHTS, folder: Path | None = None) -> Path:
        """The eye network's ONNX graph: shipped, cached, or exported now (models/onnx_cache.py)."""
        from models.onnx_cache import cached_graph

        def export(path: Path) -> None:
            from models.pupil_net import export_pupil_graph
            export_pupil_graph(weights, path)

        return cached_graph(weights, "pupils", export, folder)

    def __call__(self, image_bgr: np.ndarray, landmarks_px: list[np.ndarray]) -> list[np.ndarray]:
        """Each eye is cut from the uint8 frame by OpenCV (the same sampling as the training crops,
        models.crop), so the frame is never converted whole."""
        if not landmarks_px:
            return []
        m = eye_crop_matrices(np.stack(landmarks_px)).reshape(-1, 2, 3)            # (B*2,2,3)
        in_crop = self.graph(np.stack([crop.warp(image_bgr, e, EYE_PX) for e in m])).astype(np.float64)
        pupils = [crop.transform_points(crop.invert(e), p[None])[0] for e, p in zip(m, in_crop)]
        return list(np.asarray(pupils).reshape(-1, 2, 2))
