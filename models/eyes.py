"""The eyes: pupils and eyelids from a small network on eye crops (as OpenSeeFace's gaze net).

Each eye is cut from the frame around its six iBUG outline points (36-41, then 42-47), levelled on its
corners and EYE_PX square; the second eye is mirrored, so one network serves both. The network is a
few strided convolutions ending in one heatmap per point whose soft-argmax is the point, in crop px:
per eye the pupil, then the six outline points (OUTLINE: outer corner, upper lid, inner corner, lower lid).

Why the outline: the landmark network draws the lids towards an average eye (on 300-W common the lid gap
over the eye width from its lids spreads 0.063 where the annotation's spreads 0.081), and a blink is a few
px of lid. The eye network sees the eye alone, at its own scale, and errs apart from the landmark
network; the mean of the two outlines carries the blinks better than either (bench/RESULTS.md, Closed
eyes). The landmarks themselves stay the landmark network's: the eye network's outline serves the eye
shapes (with_eye_outline).

Labels: the pupils are pseudo-labels, MediaPipe's refined iris centres (vertices 468 and 473) on the
300-W training faces and, carried through the pose synthesizer like every other point, on their
synthetic views; the outline is the annotation, with closed eyes made from open ones (models.eyelids).
Training crops are cut from the *ground-truth* eye outline moved by noise as large as the tracker's own
landmark error, so at run time the predicted outline is enough.
Order (WFLW's convention): the pupil of the eye drawn by 36-41 first, then the one drawn by 42-47.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import crop

EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
# each eye's outline in its crop's order: the second eye is mirrored, so its outer corner (45) comes first
# as the first eye's (36) does
OUTLINE = ((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))
POINTS = 1 + len(OUTLINE[0])     # per eye: the pupil, then the outline
EYE_PX = 32            # crop side, px
EYE_SPAN = 1.8         # crop side / eye-corner distance: the whole eye, the lids and a margin
WEIGHTS = Path(__file__).resolve().parent / "weights" / "eyes_300w.pt"


@dataclass
class Eyes:
    """One face's eyes in image px."""
    pupils_px: np.ndarray                  # (2,2): the pupil of the eye drawn by iBUG 36-41, then 42-47
    outline_px: np.ndarray | None = None   # (12,2): iBUG 36-47 as the eye network places them (None: not known)


def outline_to_68(per_eye: np.ndarray) -> np.ndarray:
    """(...,2,6,2) outline points in each crop's order (OUTLINE) -> (...,12,2) in iBUG order 36-47."""
    out = np.empty(per_eye.shape[:-3] + (12, 2), per_eye.dtype)
    out[..., np.asarray(OUTLINE).ravel() - 36, :] = per_eye.reshape(per_eye.shape[:-3] + (12, 2))
    return out


def with_eye_outline(pts68: np.ndarray, outline_px: np.ndarray | None) -> np.ndarray:
    """68 points whose eyes (36-47) are the mean of theirs and the eye network's outline: what the eye
    shapes are measured on. The two err apart, so their mean is nearer the true lids than either."""
    if outline_px is None or not np.isfinite(outline_px).all():
        return pts68
    out = np.array(pts68, np.float64)
    out[36:48] = (out[36:48] + outline_px) / 2
    return out


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


class EyeLocator:
    """The eyes of tracked faces at run time: image + 68 landmarks -> Eyes per face.

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
            from models.eye_net import export_eye_graph
            export_eye_graph(weights, path)

        return cached_graph(weights, "eyes", export, folder)

    def __call__(self, image_bgr: np.ndarray, landmarks_px: list[np.ndarray]) -> list[Eyes]:
        """Each eye is cut from the uint8 frame by OpenCV (the same sampling as the training crops,
        models.crop), so the frame is never converted whole."""
        if not landmarks_px:
            return []
        m = eye_crop_matrices(np.stack(landmarks_px)).reshape(-1, 2, 3)            # (B*2,2,3)
        in_crop = self.graph(np.stack([crop.warp(image_bgr, e, EYE_PX) for e in m])).astype(np.float64)  # (B*2,P,2)
        points = np.stack([crop.transform_points(crop.invert(e), p) for e, p in zip(m, in_crop)]).reshape(-1, 2, POINTS, 2)
        return [Eyes(p[:, 0], outline_to_68(p[:, 1:])) for p in points]
