"""Landmark schemes: flip maps, inter-ocular pairs and cross-scheme index maps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scheme:
    name: str
    num_points: int
    flip: tuple[int, ...]        # index of each point's mirror partner (an involution)
    ocular: tuple[int, int]      # outer eye corners: the NME normaliser
    jaw: tuple[int, ...] = ()    # the face contour (300-W and WFLW put it on the visible silhouette)

    def __post_init__(self):
        f = np.asarray(self.flip)
        assert len(f) == self.num_points and (f[f] == np.arange(self.num_points)).all(), self.name


def _r(a: int, b: int) -> list[int]:
    """Inclusive range a..b (descending if a > b)."""
    return list(range(a, b - 1, -1)) if a > b else list(range(a, b + 1))


# spec §1.2 flip tables
FLIP_68 = (_r(16, 0) + _r(26, 17) + _r(27, 30) + _r(35, 31) + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
           + _r(54, 48) + _r(59, 55) + _r(64, 60) + _r(67, 65))
FLIP_98 = (_r(32, 0) + [46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38] + _r(51, 54)
           + _r(59, 55) + [72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65] + _r(82, 76)
           + _r(87, 83) + _r(92, 88) + _r(95, 93) + [97, 96])
FLIP_29 = (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27, 28)

SCHEMES = {
    68: Scheme("300w-68", 68, tuple(FLIP_68), (36, 45), tuple(range(17))),
    98: Scheme("wflw-98", 98, tuple(FLIP_98), (60, 72), tuple(range(33))),
    29: Scheme("cofw-29", 29, FLIP_29, (8, 9)),
}

# WFLW-98 -> iBUG-68 (the usual map, e.g. used by PFLD/ADNet tooling): contour every other point,
# brows' upper arcs, nose, eyes' 6 of 8 points, the whole mouth.
WFLW98_TO_68 = np.array(
    list(range(0, 33, 2)) + list(range(33, 38)) + list(range(42, 47)) + list(range(51, 60))
    + [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75] + list(range(76, 96)))

# MediaPipe Face Mesh (478) -> iBUG-68: for each iBUG point the mesh vertex closest to it on average,
# fitted on 400 300-W *training* faces (python -m bench.fit_mediapipe_map; never on test faces).
# Face Mesh has no true jaw-contour points, so the contour part stays approximate.
MEDIAPIPE_TO_68 = np.array([
    127, 227, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 447, 356,
    70, 63, 105, 66, 55, 336, 296, 334, 293, 300,
    168, 197, 195, 4, 75, 97, 2, 326, 460,
    7, 159, 158, 155, 153, 144, 382, 385, 387, 263, 373, 380,
    61, 39, 37, 11, 267, 304, 291, 321, 314, 17, 84, 181, 96, 82, 13, 312, 308, 317, 14, 87,
])

assert len(WFLW98_TO_68) == 68 and len(MEDIAPIPE_TO_68) == 68


def scheme_for(num_points: int) -> Scheme:
    if num_points not in SCHEMES:
        raise ValueError(f"unknown landmark scheme with {num_points} points; known: {sorted(SCHEMES)}")
    return SCHEMES[num_points]


def to_68(pts: np.ndarray) -> np.ndarray:
    """(..., K, 2) landmarks of any known scheme -> the 68 iBUG points."""
    if pts.shape[-2] == 68:
        return pts
    if pts.shape[-2] == 98:
        return pts[..., WFLW98_TO_68, :]
    if pts.shape[-2] in (468, 478):
        return pts[..., MEDIAPIPE_TO_68, :]
    raise ValueError(f"no map from {pts.shape[-2]} points to 68")
