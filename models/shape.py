"""A statistical shape model of 68-point faces: similarity-aligned mean + PCA (a point distribution model).

It separates a face's landmarks into a rigid part (a similarity: rotation, scale, translation)
and a shape part (a few PCA coefficients), which the shape-aware stabilizer filters differently
(stream/smoothing.py). Fitted once on the 300-W training shapes and shipped as a small .npz:

    python run.py fit-shape --data ../shared/data/300w --out models/weights/shape_300w.npz

Frames: "model" coordinates are the mean shape's (centred, unit RMS radius); a similarity maps
model -> image px as x_img = [[a, -b], [b, a]] @ x_model + t.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_SHAPE_MODEL = Path(__file__).resolve().parent / "weights" / "shape_300w.npz"


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst, (K,2) each -> (a, b, tx, ty) (Umeyama without reflection)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    denom = (s ** 2).sum()
    a = (s * d).sum() / denom
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / denom
    t = md - np.array([[a, -b], [b, a]]) @ ms
    return np.array([a, b, t[0], t[1]])


def apply_similarity(params: np.ndarray, pts: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    return pts @ np.array([[a, -b], [b, a]]).T + np.array([tx, ty])


def invert_similarity(params: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    n = a * a + b * b
    ia, ib = a / n, -b / n
    t = -np.array([[ia, -ib], [ib, ia]]) @ np.array([tx, ty])
    return np.array([ia, ib, t[0], t[1]])


@dataclass
class ShapeModel:
    mean: np.ndarray          # (K,2) model coordinates: centred, unit RMS radius
    components: np.ndarray    # (M,2K) orthonormal rows, largest variance first
    sd: np.ndarray            # (M,) standard deviation of each coefficient over the training shapes

    @property
    def num_points(self) -> int:
        return len(self.mean)

    def to_model(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K,2) image px -> (similarity model->image (4,), the points in model coordinates (K,2))."""
        params = similarity_fit(self.mean, pts)
        return params, apply_similarity(invert_similarity(params), pts)

    def coefficients(self, model_pts: np.ndarray, k: int, clip_sd: float = 3.0) -> np.ndarray:
        b = self.components[:k] @ (model_pts - self.mean).ravel()
        return np.clip(b, -clip_sd * self.sd[:k], clip_sd * self.sd[:k])

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        k = len(coefficients)
        return self.mean + (coefficients @ self.components[:k]).reshape(-1, 2)

    def plausible(self, pts: np.ndarray, clip_sd: float = 3.0) -> np.ndarray:
        """(K,2) image px -> the nearest face the model deems plausible, in image px: every component's
        coefficient within `clip_sd` standard deviations (an active shape model's constraint)."""
        params, model_pts = self.to_model(pts)
        return apply_similarity(params, self.reconstruct(self.coefficients(model_pts, len(self.sd), clip_sd)))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                 sd=self.sd.astype(np.float32))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_SHAPE_MODEL) -> "ShapeModel":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["mean"].astype(np.float64), f["components"].astype(np.float64), f["sd"].astype(np.float64))


def load_shape_model(path: str | Path | None = None) -> ShapeModel:
    """One loaded copy per file for the whole process (read-only once loaded); None: the shipped model."""
    return _loaded(str(path or DEFAULT_SHAPE_MODEL))


@lru_cache(maxsize=4)
def _loaded(path: str) -> ShapeModel:
    return ShapeModel.load(path)


def fit_shape_model(shapes: np.ndarray, num_components: int = 40, iterations: int = 5) -> ShapeModel:
    """Generalised Procrustes alignment of (N,K,2) shapes to their mean, then PCA."""
    mean = shapes[0] - shapes[0].mean(0)
    for _ in range(iterations):
        mean = mean - mean.mean(0)
        mean = mean / np.sqrt((mean ** 2).sum(1).mean())
        aligned = np.stack([apply_similarity(invert_similarity(similarity_fit(mean, s)), s) for s in shapes])
        mean = aligned.mean(0)
    mean = (mean - mean.mean(0)) / np.sqrt(((mean - mean.mean(0)) ** 2).sum(1).mean())
    aligned = np.stack([apply_similarity(invert_similarity(similarity_fit(mean, s)), s) for s in shapes])
    x = (aligned - mean).reshape(len(shapes), -1)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    m = min(num_components, len(sv))
    return ShapeModel(mean, vt[:m], sv[:m] / np.sqrt(len(shapes)))
