"""Expression values from 68-point landmarks, mapped to ARKit blendshape names (what VMC apps read).

Every measure is a ratio inside the face (heights over widths of the same feature, distances over
the inter-ocular distance), taken after undoing the in-plane roll, so translation, scale and roll
cancel; yaw shortens horizontal distances, so they are divided by cos(yaw). A one-time neutral
calibration (`calibrate`) replaces the population defaults with the user's own resting face.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# population-typical resting values (300-W faces), replaced by calibrate()
DEFAULT_NEUTRAL = {"eye_l": 0.28, "eye_r": 0.28, "mouth_open": 0.02, "mouth_wide": 0.95, "brow": 0.42}
# how far from neutral a feature moves at full expression (fraction of the neutral value or absolute)
FULL_RANGE = {"mouth_open": 0.45, "mouth_wide": 0.25, "mouth_narrow": 0.2, "brow": 0.12}


def _frontal(pts: np.ndarray, yaw_deg: float = 0.0) -> np.ndarray:
    """Undo roll (eye line horizontal), scale to inter-ocular 1, stretch x by 1/cos(yaw)."""
    eye_l, eye_r = pts[36:42].mean(0), pts[42:48].mean(0)
    d = eye_r - eye_l
    io = np.hypot(*d)
    c, s = d / io
    rot = np.array([[c, s], [-s, c]])
    out = (pts - (eye_l + eye_r) / 2) @ rot.T / io
    out[:, 0] /= max(np.cos(np.radians(np.clip(yaw_deg, -60, 60))), 0.5)
    return out


def measures(pts68: np.ndarray, yaw_deg: float = 0.0) -> dict[str, float]:
    p = _frontal(np.asarray(pts68, np.float64), yaw_deg)

    def ear(e):  # eye aspect ratio: mean lid gap over eye width
        return (np.linalg.norm(p[e[1]] - p[e[5]]) + np.linalg.norm(p[e[2]] - p[e[4]])) / (2 * np.linalg.norm(p[e[0]] - p[e[3]]))

    return {"eye_l": float(ear(range(36, 42))), "eye_r": float(ear(range(42, 48))),
            "mouth_open": float(np.linalg.norm(p[62] - p[66])),           # inner-lip gap / inter-ocular
            "mouth_wide": float(np.linalg.norm(p[48] - p[54])),           # mouth corners / inter-ocular
            "brow": float(np.mean(p[36:48, 1].mean() - p[17:27, 1]))}      # brows above the eyes


@dataclass
class ExpressionEstimator:
    neutral: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NEUTRAL))

    def calibrate(self, pts68: np.ndarray, yaw_deg: float = 0.0) -> None:
        """Take the current face as the neutral (resting) face."""
        self.neutral = measures(pts68, yaw_deg)

    def blendshapes(self, pts68: np.ndarray, yaw_deg: float = 0.0) -> dict[str, float]:
        m, n = measures(pts68, yaw_deg), self.neutral
        clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
        blink_l = clip(1 - m["eye_l"] / max(n["eye_l"], 1e-3) * 1.0)
        blink_r = clip(1 - m["eye_r"] / max(n["eye_r"], 1e-3) * 1.0)
        smile = clip((m["mouth_wide"] - n["mouth_wide"]) / FULL_RANGE["mouth_wide"])
        # image-left eye is the subject's right eye
        return {"eyeBlinkRight": blink_l, "eyeBlinkLeft": blink_r,
                "jawOpen": clip((m["mouth_open"] - n["mouth_open"]) / FULL_RANGE["mouth_open"]),
                "mouthSmileLeft": smile, "mouthSmileRight": smile,
                # lips pushed forward read as a narrower mouth in a 2D image
                "mouthPucker": clip((n["mouth_wide"] - m["mouth_wide"]) / FULL_RANGE["mouth_narrow"]),
                "browInnerUp": clip((m["brow"] - n["brow"]) / FULL_RANGE["brow"])}


def vrm_vowels(shapes: dict[str, float]) -> dict[str, float]:
    """VRM's five mouth presets from the ARKit values, each in [0, 1]: an open mouth is A, a wide
    closed one I, a wide open one E, a narrow (puckered) closed one U and a narrow open one O.
    Uses jawOpen (opening), mouthSmileLeft/Right (widening) and mouthPucker (narrowing)."""
    open_ = shapes.get("jawOpen", 0.0)
    wide = (shapes.get("mouthSmileLeft", 0.0) + shapes.get("mouthSmileRight", 0.0)) / 2
    narrow = shapes.get("mouthPucker", 0.0)
    return {"A": open_ * (1 - wide) * (1 - narrow), "I": wide * (1 - open_), "U": narrow * (1 - open_),
            "E": wide * open_, "O": narrow * open_}
