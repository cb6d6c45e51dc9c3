"""Closed and half-closed eyes made from open ones, image and landmarks together.

300-W's faces nearly all have their eyes open (in its common test set 12 of 1,108 eyes are clearly
closed), so a network trained on them tends to draw an open eye on a closed one, and an avatar driven by
it seldom blinks. This edit lowers the
upper lid over the eye: in the eye's own frame (u along the corners, v across), each column of the
skin between the lid and a band above it is stretched down until the lid's edge, lashes and all, reaches
its new place; the part of the opening it covers is hidden, the rest of the opening and everything
below the lower lid stay as they were. The upper-lid landmarks move with the lid, so at full closure
they lie on the lower lid, as 300-W's annotators place them on a closed eye.

Works on the training cache (uint8 (N,3,H,W) images, (N,68,2) px landmarks); the probabilities are
fields of models.data.AugmentConfig.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

# iBUG-68 eyes: corners (first, last along u), upper lid and lower lid (in the order of the corners)
EYES = (((36, 39), (37, 38), (41, 40)), ((42, 45), (43, 44), (47, 46)))
UPPER_LIDS = tuple(i for _, upper, _ in EYES for i in upper)     # the points a closing lid moves
SKIN_ABOVE = 0.5          # the band of skin that slides down, in eye widths above the lid (below the brow)
LID_MARGIN = 0.04         # eye widths: the lid's edge is taken this far above the annotated upper lid and,
                          # closed, covers this far past the annotated lower lid (the lines may sit inside)
MIN_EYE_PX = 4.0          # narrower eyes are left alone
MIN_WIDTH_RATIO = 0.8     # faces whose eyes differ more in width (turned beyond about 30 degrees) are left
                          # alone: the far eye's lid band would reach over the nose's edge


def _lid(uv: np.ndarray, width: float) -> tuple[float, float] | None:
    """The cubic v = u (width - u) (k0 + k1 u) through both corners and the lid's two points (2,2)
    (u, v) -> (k0, k1); None when the points are not strictly between the corners in order."""
    u, v = uv[:, 0], uv[:, 1]
    if not (0 < u[0] < u[1] < width):
        return None
    g = u * (width - u)
    return tuple(np.linalg.solve(np.stack([g, g * u], 1), v))


def close_eye(image: np.ndarray, landmarks: np.ndarray, eye: int, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """image (H,W,3) uint8, landmarks (68,2) px -> the same with eye `eye` (0: points 36-41, 1: 42-47)
    closed by `amount` (0 open as it is, 1 upper lid on the lower lid)."""
    (c0, c1), upper, lower = EYES[eye]
    a, b = landmarks[c0].astype(np.float64), landmarks[c1].astype(np.float64)
    width = float(np.linalg.norm(b - a))
    if amount <= 0 or width < MIN_EYE_PX:
        return image, landmarks
    ex = (b - a) / width
    ey = np.array([-ex[1], ex[0]])
    uv = lambda p: np.stack([(p - a) @ ex, (p - a) @ ey], -1)           # noqa: E731
    up_uv, lo_uv = uv(landmarks[list(upper)].astype(np.float64)), uv(landmarks[list(lower)].astype(np.float64))
    if up_uv[:, 1].mean() > lo_uv[:, 1].mean():                         # v must point from the upper lid down
        ey = -ey
        up_uv, lo_uv = uv(landmarks[list(upper)].astype(np.float64)), uv(landmarks[list(lower)].astype(np.float64))
    up_k, lo_k = _lid(up_uv, width), _lid(lo_uv, width)
    if up_k is None or lo_k is None:
        return image, landmarks                                          # a folded outline: leave it
    lid = lambda u, k: u * (width - u) * (k[0] + k[1] * u)               # noqa: E731

    # output pixels around the eye, in eye coordinates
    h, w = image.shape[:2]
    above = SKIN_ABOVE * width
    us = np.linspace(0, width, 9)
    v_top, v_bottom = lid(us, up_k).min() - above, lid(us, lo_k).max()
    corners = np.array([[0, v_top], [width, v_top], [0, v_bottom], [width, v_bottom]])
    xy = a + corners[:, :1] * ex + corners[:, 1:] * ey
    x0, y0 = np.clip(np.floor(xy.min(0)).astype(int) - 1, 0, [w, h])
    x1, y1 = np.clip(np.ceil(xy.max(0)).astype(int) + 2, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return image, landmarks
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    pix = np.stack([gx, gy], -1)
    u, v = (pix - a) @ ex, (pix - a) @ ey
    up, lo = lid(u, up_k), lid(u, lo_k)
    new_lid = up + amount * (np.clip(lo - up, 0, None) + LID_MARGIN * width)     # over the lower lid's edge
    top = up - above
    inside = (u > 0) & (u < width) & (v >= top) & (v <= new_lid) & (new_lid > up)
    # stretch [top, new_lid] of the output from [top, up - margin] of the image: the lid's edge, just above
    # the annotated line (which may sit on the iris), lands on new_lid
    edge = up - LID_MARGIN * width
    v_src = np.where(inside, top + (v - top) * (edge - top) / np.maximum(new_lid - top, 1e-6), v)
    src = a + u[..., None] * ex + v_src[..., None] * ey
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.remap(image, src[..., 0].astype(np.float32), src[..., 1].astype(np.float32),
                                  cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = landmarks.copy()
    for i, (pu, pv) in zip(upper, up_uv):
        target = pv + amount * max(lid(pu, lo_k) - pv, 0.0)
        moved[i] = a + pu * ex + target * ey
    return out, moved


def close_eyes(images: torch.Tensor, landmarks: torch.Tensor, p: float, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (B,3,H,W) uint8, landmarks (B,68,2): with probability p per face that is not turned
    far (MIN_WIDTH_RATIO), a blink (both eyes by one amount, in a quarter of them one eye: a wink),
    half of them fully closed, the rest half to nearly closed -> (images, landmarks, (B,) bool which
    faces were picked). New tensors; the inputs are not changed."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    widths = torch.stack([(landmarks[:, c1] - landmarks[:, c0]).norm(dim=-1) for (c0, c1), _, _ in EYES], 1)
    frontal = widths.amin(1) >= MIN_WIDTH_RATIO * widths.amax(1)
    picked = torch.from_numpy(rng.random(len(images)) < p) & frontal
    if not picked.any():
        return images, landmarks, picked
    images, landmarks = images.clone(), landmarks.clone()
    for i in picked.nonzero().flatten().tolist():
        amount = 1.0 if rng.random() < 0.5 else rng.uniform(0.5, 0.95)
        eyes = (0, 1) if rng.random() < 0.75 else (int(rng.integers(2)),)
        img = np.ascontiguousarray(images[i].permute(1, 2, 0).numpy())
        pts = landmarks[i].numpy().astype(np.float64)
        for eye in eyes:
            img, pts = close_eye(img, pts, eye, amount)
        images[i] = torch.from_numpy(img).permute(2, 0, 1)
        landmarks[i] = torch.from_numpy(pts).to(landmarks.dtype)
    return images, landmarks, picked
