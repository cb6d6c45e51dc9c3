"""Face detectors: MediaPipe BlazeFace (default) and OpenCV's Haar cascade (fallback).

Both return face boxes converted to the *landmark-extent square* the landmarkers crop from
(centre + side of the square around where the 68 landmarks lie), using a per-detector
calibration measured on 300-W (`python -m bench.detector_calibration` recomputes it).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class FaceBox:
    """A square face region: centre and side in image px (the landmark-extent square)."""

    center_px: np.ndarray   # (2,)
    side_px: float
    score: float = 1.0

    def xyxy(self) -> np.ndarray:
        h = self.side_px / 2
        return np.array([*(self.center_px - h), *(self.center_px + h)], np.float32)

    @classmethod
    def from_landmarks(cls, landmarks_px: np.ndarray, score: float = 1.0) -> "FaceBox":
        lo, hi = landmarks_px.min(0), landmarks_px.max(0)
        return cls((lo + hi) / 2, float(max(hi - lo)), score)


@dataclass
class BoxCalibration:
    """Landmark square from a detector box (x, y, w, h): centre = box centre + shift * box side,
    side = scale * box side."""

    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def apply(self, x: float, y: float, w: float, h: float, score: float) -> FaceBox:
        s = max(w, h)
        c = np.array([x + w / 2 + self.shift_x * s, y + h / 2 + self.shift_y * s], np.float32)
        return FaceBox(c, self.scale * s, score)


# measured on the 554 300-W common test faces (bench/results/detector_calibration.json)
CALIBRATION = {
    "blazeface": BoxCalibration(scale=0.893, shift_x=0.0, shift_y=0.098),
    "haar": BoxCalibration(scale=0.864, shift_x=0.006, shift_y=0.152),
}


class BlazeFaceDetector:
    name = "blazeface"

    def __init__(self, min_score: float = 0.5, full_range: bool = True, calibration: BoxCalibration | None = None):
        import mediapipe as mp
        self._fd = mp.solutions.face_detection.FaceDetection(
            model_selection=1 if full_range else 0, min_detection_confidence=min_score)
        self.calibration = calibration or CALIBRATION[self.name]

    def raw(self, image_bgr: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        h, w = image_bgr.shape[:2]
        res = self._fd.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h, float(d.score[0])))
        return out

    def __call__(self, image_bgr: np.ndarray) -> list[FaceBox]:
        return [self.calibration.apply(*r) for r in self.raw(image_bgr)]

    def close(self) -> None:
        self._fd.close()


class HaarDetector:
    name = "haar"

    def __init__(self, min_size_px: int = 20, calibration: BoxCalibration | None = None):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cc = cv2.CascadeClassifier(path)
        if self._cc.empty():
            raise RuntimeError(f"OpenCV's Haar cascade is missing at {path}; reinstall opencv-contrib-python")
        self.min_size_px = min_size_px
        self.calibration = calibration or CALIBRATION[self.name]

    def raw(self, image_bgr: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        gray = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        rects = self._cc.detectMultiScale(gray, 1.1, 5, minSize=(self.min_size_px,) * 2)
        return [(float(x), float(y), float(w), float(h), 1.0) for x, y, w, h in rects]

    def __call__(self, image_bgr: np.ndarray) -> list[FaceBox]:
        return [self.calibration.apply(*r) for r in self.raw(image_bgr)]

    def close(self) -> None:
        pass


DETECTORS = {"blazeface": BlazeFaceDetector, "haar": HaarDetector}


def build_detector(name: str = "blazeface", **kwargs):
    """BlazeFace unless asked otherwise; falls back to Haar when mediapipe cannot load."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    try:
        return DETECTORS[name](**kwargs)
    except ImportError:
        return HaarDetector()
