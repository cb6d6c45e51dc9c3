"""Face crops as similarity transforms, with the exact inverse back to image pixels.

Convention: pixel coordinates are 0-based pixel centres in both the image and the crop.
A 2x3 matrix M maps image px -> crop px; cv2.warpAffine(img, M, (S, S)) samples the crop
at exactly those points, and `invert` maps crop px back with no half-pixel shift.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def square_box(landmarks_px: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Centre (2,) and side of a square `scale` x the landmarks' bounding-box side."""
    lo, hi = landmarks_px.min(0), landmarks_px.max(0)
    return (lo + hi) / 2, float(max(hi - lo)) * scale


def similarity(center_px: np.ndarray, side_px: float, out_px: int, angle_rad: float = 0.0,
               flip: bool = False) -> np.ndarray:
    """2x3 float64 matrix: image px -> crop px for a square of `side_px` centred at `center_px`,
    rotated by `angle_rad` (counter-clockwise on screen) and optionally mirrored."""
    s = out_px / side_px
    c, si = np.cos(angle_rad), np.sin(angle_rad)
    rot = s * np.array([[c, si], [-si, c]])
    if flip:
        rot = np.diag([-1.0, 1.0]) @ rot
    t = (out_px - 1) / 2 - rot @ np.asarray(center_px, np.float64)
    return np.hstack([rot, t[:, None]])


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def transform_points(m: np.ndarray | torch.Tensor, pts):
    """Apply (..., 2, 3) affine to (..., K, 2) points (numpy or torch, batched)."""
    return pts @ m[..., :, :2].swapaxes(-1, -2) + m[..., None, :, 2]


def warp(image: np.ndarray, m: np.ndarray, out_px: int) -> np.ndarray:
    return cv2.warpAffine(image, m, (out_px, out_px), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _sampling_grid(m: torch.Tensor, h: int, w: int, out_px: int) -> torch.Tensor:
    """(B,2,3) image->crop px matrices -> (B,S,S,2) grid_sample grid into an (H,W) image.

    affine_grid works in normalised coords (-1..1 spanning pixel edges), so the pixel-space
    inverse matrix is conjugated into that frame; sampling then matches cv2.warpAffine.
    """
    import torch
    import torch.nn.functional as F
    b = len(m)
    inv = torch.linalg.inv(torch.cat([m, m.new_tensor([0, 0, 1]).expand(b, 1, 3)], 1))  # crop -> image
    # normalised -> pixel for the output, pixel -> normalised for the input
    to_px = m.new_tensor([[out_px / 2, 0, (out_px - 1) / 2], [0, out_px / 2, (out_px - 1) / 2], [0, 0, 1]])
    to_norm = m.new_tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    theta = (to_norm @ inv @ to_px)[:, :2]
    return F.affine_grid(theta, [b, 1, out_px, out_px], align_corners=False)


def warp_batch(images: torch.Tensor, m: torch.Tensor, out_px: int) -> torch.Tensor:
    """Torch twin of `warp` for a batch on any device: images (B,C,H,W) float, m (B,2,3) -> (B,C,S,S)."""
    import torch.nn.functional as F
    grid = _sampling_grid(m, *images.shape[-2:], out_px).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_many(image: torch.Tensor, m: torch.Tensor, out_px: int) -> torch.Tensor:
    """Many crops of one image: image (C,H,W) float, m (N,2,3) -> (N,C,S,S). The N grids are stacked
    into one tall grid, so the frame is sampled in one call without being copied N times."""
    import torch.nn.functional as F
    n, s = len(m), out_px
    grid = _sampling_grid(m, *image.shape[-2:], s).to(image.dtype).reshape(1, n * s, s, 2)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].unflatten(1, (n, s)).transpose(0, 1)
