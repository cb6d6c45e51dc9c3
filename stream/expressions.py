"""ARKit blendshape values (what avatar apps read) from 68-point landmarks, pupils and head yaw.

Every measure is a ratio inside the face: positions are taken after undoing the in-plane roll and
dividing by the inter-ocular distance, with horizontal distances divided by cos(yaw), so translation,
scale, roll and (to first order) yaw cancel. A shape is how far its measure has moved from the user's
neutral (resting) value, over the distance a full expression moves it, clipped to [0, 1]:

    value = clip(sign * (measure - neutral) / full_range)

`LINEAR_SHAPES` lists those; a few shapes combine two measures (see `ExpressionEstimator.blendshapes`).
Sides follow ARKit: "Left" is the subject's left, which is the image-right side of a camera image.

Calibration (`CalibrationProfile`, saved per user as JSON and loaded with `--calibration FILE`):
a neutral capture (`calibrate`), per-shape full ranges (`capture_range` takes the current face as a
shape's full expression, or edit the file), and an automatic mode that keeps the neutral at the running
median of recent faces (as OpenSeeFace does), which `freeze` stops.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.schema import UserError

# Resting values of the measures on 300-W faces, until a calibration replaces them
DEFAULT_NEUTRAL = {
    "eye_l": 0.28, "eye_r": 0.28, "lower_l": 0.045, "lower_r": 0.045,
    "brow_l": 0.42, "brow_r": 0.42, "brow_inner": 0.36, "brow_outer_l": 0.36, "brow_outer_r": 0.36,
    "lip_gap": 0.02, "chin": 0.95, "chin_x": 0.0, "mouth_x": 0.0, "mouth_wide": 0.95,
    "corner_lift_l": 0.0, "corner_lift_r": 0.0, "corner_out_l": 0.47, "corner_out_r": 0.47,
    "upper_lip": 0.09, "lower_lip": 0.11, "lips_l": 0.17, "lips_r": 0.17,
    "gaze_h_l": 0.0, "gaze_v_l": 0.0, "gaze_h_r": 0.0, "gaze_v_r": 0.0,
}

# shape -> (measure, sign, full range in inter-ocular units): value = clip(sign * (m - neutral) / range)
LINEAR_SHAPES = {
    "eyeSquintRight": ("lower_l", -1, 0.03),      # the lower lid rises towards the corners
    "eyeSquintLeft": ("lower_r", -1, 0.03),
    "browDownRight": ("brow_l", -1, 0.06),
    "browDownLeft": ("brow_r", -1, 0.06),
    "browInnerUp": ("brow_inner", 1, 0.12),
    "browOuterUpRight": ("brow_outer_l", 1, 0.1),
    "browOuterUpLeft": ("brow_outer_r", 1, 0.1),
    "jawOpen": ("lip_gap", 1, 0.45),              # the inner lips part (the chin point is the noisier one)
    "jawLeft": ("chin_x", 1, 0.12),               # the chin moves towards image right
    "jawRight": ("chin_x", -1, 0.12),
    "mouthLeft": ("mouth_x", 1, 0.12),
    "mouthRight": ("mouth_x", -1, 0.12),
    "mouthSmileRight": ("corner_lift_l", 1, 0.1),  # a corner lifts above the lips' middle line
    "mouthSmileLeft": ("corner_lift_r", 1, 0.1),
    "mouthFrownRight": ("corner_lift_l", -1, 0.06),
    "mouthFrownLeft": ("corner_lift_r", -1, 0.06),
    "mouthRollUpper": ("upper_lip", -1, 0.05),    # the red of the lip turns inwards: it looks thinner
    "mouthRollLower": ("lower_lip", -1, 0.06),
}
# ranges of the shapes that combine measures
COMBINED_RANGES = {"eyeWide": 0.35, "mouthStretch": 0.1, "mouthPucker": 0.2, "mouthFunnel": 0.2,
                   "mouthClose": 0.2, "mouthPress": 0.05, "eyeLook_h": 0.45, "eyeLook_v": 0.25}
# every shape blendshapes() gives (the eyeLook ones with pupils), in the order recordings keep them
SHAPE_NAMES = (*LINEAR_SHAPES, "eyeBlinkRight", "eyeBlinkLeft", "eyeWideRight", "eyeWideLeft", "mouthStretchRight",
               "mouthStretchLeft", "mouthPucker", "mouthFunnel", "mouthClose", "mouthPressRight", "mouthPressLeft",
               "eyeLookInRight", "eyeLookOutRight", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpRight", "eyeLookDownRight",
               "eyeLookUpLeft", "eyeLookDownLeft")
WINK_DIFF = 0.4             # blink values closer than this are one blink of both eyes (their mean)
HIDDEN_EYE_YAW_DEG = 30.0   # beyond this yaw the far eye copies the near one (it is hardly seen)
GAZE_HOLD_BLINK = 0.5       # while an eye is this closed its pupil is not seen: the last gaze is held
AUTO_WINDOW = 300           # faces in the running median of the automatic neutral (10 s at 30 fps)
# eyes as (outer corner, inner corner, upper lid, lower lid) index lists; image-left (subject's right) first
EYE_POINTS = {"l": ([36], [39], [37, 38], [40, 41]), "r": ([45], [42], [43, 44], [46, 47])}
BROWS = {"l": list(range(17, 22)), "r": list(range(22, 27))}


class CalibrationError(UserError, ValueError):
    """A calibration profile that cannot be read; the message names the file."""


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
    """The face's measures (DEFAULT_NEUTRAL's keys): y grows downwards, x towards image right. With
    pupils (2,2), also each pupil's place in its eye (gaze_h/v_l/r, in half eye-corner distances)."""
    pts = np.asarray(pts68, np.float64)
    if pupils is not None:
        pts = np.concatenate([pts, np.asarray(pupils, np.float64)])
    p = _frontal(pts, yaw_deg)
    m: dict[str, float] = {}
    for side, (outer, inner, upper, lower) in EYE_POINTS.items():
        o, i, u, lo = (p[idx].mean(0) for idx in (outer, inner, upper, lower))
        width = np.linalg.norm(i - o)
        corner_y = (o[1] + i[1]) / 2
        m[f"eye_{side}"] = float((lo[1] - u[1]) / width)            # eye aspect ratio: lid gap / eye width
        m[f"lower_{side}"] = float(lo[1] - corner_y)
        eye_y = p[outer + inner + upper + lower, 1].mean()
        m[f"brow_{side}"] = float(eye_y - p[BROWS[side], 1].mean())
        m[f"brow_outer_{side}"] = float(eye_y - p[BROWS[side][0 if side == "l" else -1], 1])
        if pupils is not None:
            pupil = p[68 if side == "l" else 69]
            mid, half = (o + i) / 2, width / 2
            m[f"gaze_h_{side}"], m[f"gaze_v_{side}"] = ((pupil - mid) / max(half, 1e-6)).tolist()
    eye_y = p[36:48, 1].mean()
    m["brow_inner"] = float(eye_y - p[[21, 22], 1].mean())
    nose_x = p[27:31, 0].mean()
    lips_mid = (p[62] + p[66]) / 2
    m["lip_gap"] = float(np.linalg.norm(p[62] - p[66]))
    m["chin"] = float(p[8, 1] - p[33, 1])
    m["chin_x"] = float(p[8, 0] - nose_x)
    m["mouth_x"] = float(p[[51, 57, 62, 66], 0].mean() - nose_x)
    m["mouth_wide"] = float(np.linalg.norm(p[48] - p[54]))
    m["corner_lift_l"], m["corner_lift_r"] = float(lips_mid[1] - p[48, 1]), float(lips_mid[1] - p[54, 1])
    centre_x = p[[51, 57, 62, 66], 0].mean()
    m["corner_out_l"], m["corner_out_r"] = float(centre_x - p[48, 0]), float(p[54, 0] - centre_x)
    m["upper_lip"], m["lower_lip"] = float(p[62, 1] - p[51, 1]), float(p[57, 1] - p[66, 1])
    m["lips_l"] = float((p[61, 1] - p[50, 1]) + (p[58, 1] - p[67, 1]))
    m["lips_r"] = float((p[63, 1] - p[52, 1]) + (p[56, 1] - p[65, 1]))
    return m


@dataclass
class CalibrationProfile:
    """One user's calibration: what their face does at rest and how far their expressions go."""
    neutral: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NEUTRAL))
    ranges: dict[str, float] = field(default_factory=dict)   # shape -> full range, overriding the defaults
    auto: bool = False        # keep the neutral at the running median of recent faces

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationProfile":
        try:
            data = json.loads(Path(path).read_text())
            prof = cls({**DEFAULT_NEUTRAL, **{k: float(v) for k, v in data.get("neutral", {}).items()}},
                       {k: float(v) for k, v in data.get("ranges", {}).items()}, bool(data.get("auto", False)))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise CalibrationError(f"cannot read the calibration profile {path} ({e.__class__.__name__}: {e}); "
                                   "make one with the calibrate key and save it, or leave --calibration out") from None
        unknown = set(prof.ranges) - set(LINEAR_SHAPES) - set(COMBINED_RANGES)
        if unknown:
            raise CalibrationError(f"{path}: unknown shapes in 'ranges': {', '.join(sorted(unknown))}")
        return prof


@dataclass
class ExpressionEstimator:
    profile: CalibrationProfile = field(default_factory=CalibrationProfile)
    _gaze: dict[str, float] = field(default_factory=dict)        # the last gaze seen, held through blinks
    _recent: deque = field(default_factory=lambda: deque(maxlen=AUTO_WINDOW))

    @property
    def neutral(self) -> dict[str, float]:
        return self.profile.neutral

    def calibrate(self, pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> None:
        """Take the current face as the neutral (resting) face, looking straight ahead."""
        self.profile.neutral = {**DEFAULT_NEUTRAL, **measures(pts68, yaw_deg, pupils)}

    def capture_range(self, shape: str, pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> float:
        """Take the current face as `shape` at its fullest: its range becomes the distance from the neutral."""
        if shape not in LINEAR_SHAPES:
            raise CalibrationError(f"cannot capture a range for {shape!r}; shapes with one measure: {', '.join(LINEAR_SHAPES)}")
        measure, sign, _ = LINEAR_SHAPES[shape]
        moved = sign * (measures(pts68, yaw_deg, pupils)[measure] - self.neutral[measure])
        if moved <= 0:
            raise CalibrationError(f"the face does not show {shape} (its measure moved the other way); try again")
        self.profile.ranges[shape] = float(moved)
        return float(moved)

    def freeze(self) -> None:
        """Stop the automatic neutral where it is."""
        self.profile.auto = False

    def _range(self, shape: str, default: float) -> float:
        return self.profile.ranges.get(shape, default)

    def blendshapes(self, pts68: np.ndarray, yaw_deg: float = 0.0, pupils: np.ndarray | None = None) -> dict[str, float]:
        m = measures(pts68, yaw_deg, pupils)
        if self.profile.auto:
            self._recent.append(list(m.values()))         # one median over the window per frame, not one per key
            self.profile.neutral = {**self.neutral, **dict(zip(m, np.median(self._recent, axis=0).tolist()))}
        n = self.neutral
        out = {name: clip(sign * (m[meas] - n[meas]) / self._range(name, rng))
               for name, (meas, sign, rng) in LINEAR_SHAPES.items()}
        ratio_l, ratio_r = m["eye_l"] / max(n["eye_l"], 1e-3), m["eye_r"] / max(n["eye_r"], 1e-3)
        blink_l, blink_r = _stable_blinks(clip(1 - ratio_l), clip(1 - ratio_r), yaw_deg)
        wide = self._range("eyeWide", COMBINED_RANGES["eyeWide"])
        open_ = out["jawOpen"]
        narrow = clip((n["mouth_wide"] - m["mouth_wide"]) / self._range("mouthPucker", COMBINED_RANGES["mouthPucker"]))
        stretch = self._range("mouthStretch", COMBINED_RANGES["mouthStretch"])
        press = self._range("mouthPress", COMBINED_RANGES["mouthPress"])
        out |= {
            # image-left eye is the subject's right eye
            "eyeBlinkRight": blink_l, "eyeBlinkLeft": blink_r,
            "eyeWideRight": clip((ratio_l - 1) / wide), "eyeWideLeft": clip((ratio_r - 1) / wide),
            # corners pulled sideways, less what a smile's lift explains
            "mouthStretchRight": clip((m["corner_out_l"] - n["corner_out_l"]) / stretch) * (1 - out["mouthSmileRight"]),
            "mouthStretchLeft": clip((m["corner_out_r"] - n["corner_out_r"]) / stretch) * (1 - out["mouthSmileLeft"]),
            # lips pushed forward read as a narrower mouth in a 2D image: closed = pucker, open = funnel
            "mouthPucker": narrow * (1 - open_), "mouthFunnel": narrow * open_,
            # the jaw drops (chin) while the lips stay together
            "mouthClose": clip(((m["chin"] - n["chin"]) - (m["lip_gap"] - n["lip_gap"]))
                               / self._range("mouthClose", COMBINED_RANGES["mouthClose"])),
            # lips pressed together look thinner at the sides while the mouth is shut
            "mouthPressRight": clip((n["lips_l"] - m["lips_l"]) / press) * (1 - open_),
            "mouthPressLeft": clip((n["lips_r"] - m["lips_r"]) / press) * (1 - open_),
        }
        if pupils is not None:
            out |= self._look(m, blink_l, blink_r, yaw_deg)
        return out

    def _look(self, m: dict, blink_l: float, blink_r: float, yaw_deg: float) -> dict[str, float]:
        """ARKit eyeLook{In,Out,Up,Down}{Left,Right} from each pupil's place in its eye against the neutral."""
        n = self.neutral
        for side, blink in (("l", blink_l), ("r", blink_r)):
            if blink < GAZE_HOLD_BLINK or f"h_{side}" not in self._gaze:   # a closing lid hides the pupil: hold the last gaze
                self._gaze[f"h_{side}"] = m[f"gaze_h_{side}"] - n[f"gaze_h_{side}"]
                self._gaze[f"v_{side}"] = m[f"gaze_v_{side}"] - n[f"gaze_v_{side}"]
        g = dict(self._gaze)
        if abs(yaw_deg) > HIDDEN_EYE_YAW_DEG:      # positive yaw (nose to image left) turns the image-left eye away
            near, far = ("r", "l") if yaw_deg > 0 else ("l", "r")
            g[f"h_{far}"], g[f"v_{far}"] = g[f"h_{near}"], g[f"v_{near}"]
        h, v = self._range("eyeLook_h", COMBINED_RANGES["eyeLook_h"]), self._range("eyeLook_v", COMBINED_RANGES["eyeLook_v"])
        # image-left eye = the subject's right eye: looking to image right is "in" (towards the nose) for it
        return {"eyeLookInRight": clip(g["h_l"] / h), "eyeLookOutRight": clip(-g["h_l"] / h),
                "eyeLookInLeft": clip(-g["h_r"] / h), "eyeLookOutLeft": clip(g["h_r"] / h),
                "eyeLookUpRight": clip(-g["v_l"] / v), "eyeLookDownRight": clip(g["v_l"] / v),
                "eyeLookUpLeft": clip(-g["v_r"] / v), "eyeLookDownLeft": clip(g["v_r"] / v)}


def clip(v: float) -> float:
    """A shape value in [0, 1] (plain floats: np.clip costs 20x more per scalar, ~40 a face a frame)."""
    return min(max(float(v), 0.0), 1.0)


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
    closed one I, a wide open one E, a narrow (puckered) closed one U and a narrow open one O."""
    g = lambda k: shapes.get(k, 0.0)  # noqa: E731
    open_ = g("jawOpen")
    wide = max((g("mouthStretchLeft") + g("mouthStretchRight")) / 2, (g("mouthSmileLeft") + g("mouthSmileRight")) / 2)
    narrow = max(g("mouthPucker"), g("mouthFunnel"))
    return {"A": open_ * (1 - wide) * (1 - narrow), "I": wide * (1 - open_), "U": narrow * (1 - open_),
            "E": wide * open_, "O": narrow * open_}
