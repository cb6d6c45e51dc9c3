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
DEFAULT_NEUTRAL = {"eye_l": 0.28, "eye_r": 0.28, "mouth_open": 0.02, "mouth_wide": 0.95, "brow": 0.42,
                   "gaze_h_l": 0.0, "gaze_v_l": 0.0, "gaze_h_r": 0.0, "gaze_v_r": 0.0}
# how far from neutral a feature moves at full expression (fraction of the neutral value or absolute)
FULL_RANGE = {"mouth_open": 0.45, "mouth_wide": 0.25, "mouth_narrow": 0.2, "brow": 0.12,
              "gaze_h": 0.45, "gaze_v": 0.25}     # pupil shift / half the eye-corner distance at a full look
WINK_DIFF = 0.4        # blink values closer than this are one blink of both eyes (their mean)
HIDDEN_EYE_YAW_DEG = 30.0   # beyond this yaw the far eye copies the near one (it is hardly seen)
GAZE_HOLD_BLINK = 0.5  # while an eye is this closed its pupil is not seen: the last gaze is held
# eyes of the 68 iBUG points as (outer corner, inner corner, upper lid, lower lid) index lists;
# image-left (the subject's right) first
EYE_POINTS = {"l": ([36], [39], [37, 38], [40, 41]), "r": ([45], [42], [43, 44], [46, 47])}


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


def measures(pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> dict[str, float]:
    """Ratios inside the face; with pupils (2,2), also each pupil's place in its eye (gaze_h/v_l/r: + = image
    right / down, in half eye-corner distances)."""
    pts = np.asarray(pts68, np.float64)
    if pupils is not None:
        pts = np.concatenate([pts, np.asarray(pupils, np.float64)])
    p = _frontal(pts, yaw_deg)
    gaze = {}
    if pupils is not None:
        for side, pupil in (("l", p[68]), ("r", p[69])):
            outer, inner, _, _ = (p[idx].mean(0) for idx in EYE_POINTS[side])
            mid, half = (outer + inner) / 2, np.linalg.norm(inner - outer) / 2
            gaze[f"gaze_h_{side}"], gaze[f"gaze_v_{side}"] = ((pupil - mid) / max(half, 1e-6)).tolist()

    def ear(e):  # eye aspect ratio: mean lid gap over eye width
        return (np.linalg.norm(p[e[1]] - p[e[5]]) + np.linalg.norm(p[e[2]] - p[e[4]])) / (2 * np.linalg.norm(p[e[0]] - p[e[3]]))

    return {"eye_l": float(ear(range(36, 42))), "eye_r": float(ear(range(42, 48))),
            "mouth_open": float(np.linalg.norm(p[62] - p[66])),           # inner-lip gap / inter-ocular
            "mouth_wide": float(np.linalg.norm(p[48] - p[54])),           # mouth corners / inter-ocular
            "brow": float(np.mean(p[36:48, 1].mean() - p[17:27, 1])),      # brows above the eyes
            **gaze}


@dataclass
class ExpressionEstimator:
    neutral: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NEUTRAL))
    _gaze: dict[str, float] = field(default_factory=dict)     # the last gaze seen, held through blinks

    def calibrate(self, pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> None:
        """Take the current face as the neutral (resting) face, looking straight ahead."""
        self.neutral = {**DEFAULT_NEUTRAL, **measures(pts68, yaw_deg, pupils)}

    def blendshapes(self, pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> dict[str, float]:
        m, n = measures(pts68, yaw_deg, pupils), self.neutral
        clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
        blink_l, blink_r = _stable_blinks(clip(1 - m["eye_l"] / max(n["eye_l"], 1e-3)),
                                          clip(1 - m["eye_r"] / max(n["eye_r"], 1e-3)), yaw_deg)
        smile = clip((m["mouth_wide"] - n["mouth_wide"]) / FULL_RANGE["mouth_wide"])
        gaze = self._look(m, blink_l, blink_r, yaw_deg) if pupils is not None else {}
        # image-left eye is the subject's right eye
        return {"eyeBlinkRight": blink_l, "eyeBlinkLeft": blink_r, **gaze,
                "jawOpen": clip((m["mouth_open"] - n["mouth_open"]) / FULL_RANGE["mouth_open"]),
                "mouthSmileLeft": smile, "mouthSmileRight": smile,
                # lips pushed forward read as a narrower mouth in a 2D image
                "mouthPucker": clip((n["mouth_wide"] - m["mouth_wide"]) / FULL_RANGE["mouth_narrow"]),
                "browInnerUp": clip((m["brow"] - n["brow"]) / FULL_RANGE["brow"])}


    def _look(self, m: dict, blink_l: float, blink_r: float, yaw_deg: float) -> dict[str, float]:
        """ARKit eyeLook{In,Out,Up,Down}{Left,Right} from each pupil's place in its eye against the neutral."""
        n = self.neutral
        for side, blink in (("l", blink_l), ("r", blink_r)):
            if blink < GAZE_HOLD_BLINK or not self._gaze:      # a closing lid hides the pupil: hold the last gaze
                self._gaze[f"h_{side}"] = m[f"gaze_h_{side}"] - n[f"gaze_h_{side}"]
                self._gaze[f"v_{side}"] = m[f"gaze_v_{side}"] - n[f"gaze_v_{side}"]
        g = dict(self._gaze)
        if abs(yaw_deg) > HIDDEN_EYE_YAW_DEG:      # positive yaw (nose to image left) turns the image-left eye away
            near, far = ("r", "l") if yaw_deg > 0 else ("l", "r")
            g[f"h_{far}"], g[f"v_{far}"] = g[f"h_{near}"], g[f"v_{near}"]
        clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
        h, v = FULL_RANGE["gaze_h"], FULL_RANGE["gaze_v"]
        # image-left eye = the subject's right eye: looking to image right is "in" (towards the nose) for it
        return {"eyeLookInRight": clip(g["h_l"] / h), "eyeLookOutRight": clip(-g["h_l"] / h),
                "eyeLookInLeft": clip(-g["h_r"] / h), "eyeLookOutLeft": clip(g["h_r"] / h),
                "eyeLookUpRight": clip(-g["v_l"] / v), "eyeLookDownRight": clip(g["v_l"] / v),
                "eyeLookUpLeft": clip(-g["v_r"] / v), "eyeLookDownLeft": clip(g["v_r"] / v)}

    def gaze(self) -> dict[str, tuple[float, float]]:
        """Per eye (subject's 'left'/'right'), the look as (yaw, pitch) in [-1, 1]: + yaw = towards image
        left (the head's yaw convention), + pitch = down; the last one seen, as held through blinks."""
        g, h, v = self._gaze, FULL_RANGE["gaze_h"], FULL_RANGE["gaze_v"]
        if not g:
            return {}
        c = lambda x: float(np.clip(x, -1.0, 1.0))  # noqa: E731
        return {"right": (c(-g["h_l"] / h), c(g["v_l"] / v)), "left": (c(-g["h_r"] / h), c(g["v_r"] / v))}


def _stable_blinks(image_left: float, image_right: float, yaw_deg: float) -> tuple[float, float]:
    """Both eyes close together unless they differ by WINK_DIFF (a wink); a turned head's far eye,
    hardly seen, follows the near one."""
    if abs(yaw_deg) > HIDDEN_EYE_YAW_DEG:
        near = image_right if yaw_deg > 0 else image_left     # nose to image left: the image-left eye is far
        return near, near
    if abs(image_left - image_right) < WINK_DIFF:
        both = (image_left + image_right) / 2
        return both, both
    return image_left, image_right


def vrm_vowels(shapes: dict[str, float]) -> dict[str, float]:
    """VRM's five mouth presets from the ARKit values, each in [0, 1]: an open mouth is A, a wide
    closed one I, a wide open one E, a narrow (puckered) closed one U and a narrow open one O.
    Uses jawOpen (opening), mouthSmileLeft/Right (widening) and mouthPucker (narrowing)."""
    open_ = shapes.get("jawOpen", 0.0)
    wide = (shapes.get("mouthSmileLeft", 0.0) + shapes.get("mouthSmileRight", 0.0)) / 2
    narrow = shapes.get("mouthPucker", 0.0)
    return {"A": open_ * (1 - wide) * (1 - narrow), "I": wide * (1 - open_), "U": narrow * (1 - open_),
            "E": wide * open_, "O": narrow * open_}
