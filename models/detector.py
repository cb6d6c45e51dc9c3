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


# fitted on the 2012 300-W training faces (python -m bench.detector_calibration -> bench/results/detector_calibration.json)
CALIBRATION = {
    "blazeface-short": BoxCalibration(scale=0.962, shift_x=-0.006, shift_y=0.054),
    "blazeface-full": BoxCalibration(scale=0.902, shift_x=-0.002, shift_y=0.096),
    "haar": BoxCalibration(scale=0.86, shift_x=0.004, shift_y=0.147),
}
BLAZEFACE_MODELS = {"short": 0, "full": 1}   # MediaPipe's model_selection


class BlazeFaceDetector:
    """MediaPipe's BlazeFace, both models: the short-range one finds the faces that fill the frame
    (a webcam close-up, a portrait photo: the full-range model missed 26 of the 554 300-W test
    faces, all close-ups, and the short-range one none, with half the box-centre error: 3.6 vs 7.5 %
    of the face, median), the full-range one the small faces further away. Their boxes are merged
    (the higher score wins an overlap)."""

    name = "blazeface"

    def __init__(self, min_score: float = 0.5, ranges: tuple[str, ...] = ("short", "full"), merge_iou: float = 0.3,
                 calibration: dict[str, BoxCalibration] | None = None):
        import mediapipe as mp
        self._models = {r: mp.solutions.face_detection.FaceDetection(model_selection=BLAZEFACE_MODELS[r],
                                                                     min_detection_confidence=min_score)
                        for r in ranges}
        self.calibration = calibration or CALIBRATION
        self.merge_iou = merge_iou

    def raw(self, image_bgr: np.ndarray, model: str) -> list[tuple[float, float, float, float, float]]:
        """One model's boxes (x, y, w, h, score) in image px."""
        h, w = image_bgr.shape[:2]
        res = self._models[model].process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h, float(d.score[0])))
        return out

    def __call__(self, image_bgr: np.ndarray) -> list[FaceBox]:
        boxes = [self.calibration[f"blazeface-{m}"].apply(*r) for m in self._models for r in self.raw(image_bgr, m)]
        return merge_boxes(boxes, self.merge_iou)

    def close(self) -> None:
        for m in self._models.values():
            m.close()


def merge_boxes(boxes: list[FaceBox], max_iou: float = 0.3, keep: list[FaceBox] | None = None) -> list[FaceBox]:
    """Non-maximum suppression: the higher score wins an overlap; boxes in `keep` win over all of `boxes`."""
    kept: list[FaceBox] = list(keep or [])
    for b in sorted(boxes, key=lambda b: -b.score):
        if all(iou(b.xyxy(), k.xyxy()) < max_iou for k in kept):
            kept.append(b)
    return kept


# Tiles per side for photos. On the 206 WFLW test faces (group photos, small faces; both BlazeFace
# models) the whole-image pass found 155, with 2 x 2 tiles 190, 3 x 3 196, 4 x 4 194; 3 x 3 took
# 79 ms an image on a 2-core CPU (2 x 2: 45 ms).
STILL_TILES = 3


def find_faces(detector, image_bgr: np.ndarray, tile_grid: int = STILL_TILES) -> list[FaceBox]:
    """The whole image, then a grid x grid of overlapping tiles (each 1.2/grid of the image), merged.

    For photos, where a face missed once is never looked for again: small faces (a crowd, a
    group photo) are found in a tile that the detector sees at a larger scale (STILL_TILES).
    Costs grid^2 more detector runs, so tracking, which detects every few frames, does not use it.
    """
    h, w = image_bgr.shape[:2]
    size = min(1.0, 1.2 / max(tile_grid, 1))
    tile_boxes = []
    for fy in np.linspace(0, 1 - size, tile_grid) if tile_grid > 1 else []:
        for fx in np.linspace(0, 1 - size, tile_grid):
            x0, y0, tw, th = int(fx * w), int(fy * h), int(size * w), int(size * h)
            for b in detector(image_bgr[y0:y0 + th, x0:x0 + tw]):
                lo, hi = b.center_px - b.side_px / 2, b.center_px + b.side_px / 2
                # a face cut by an inner tile edge is found whole by the image pass or another tile
                cut = (lo[0] < 0 < x0) or (lo[1] < 0 < y0) or (hi[0] > tw and x0 + tw < w) or (hi[1] > th and y0 + th < h)
                if not cut:
                    tile_boxes.append(FaceBox(b.center_px + np.array([x0, y0], np.float32), b.side_px, b.score))
    whole = merge_boxes(list(detector(image_bgr)))
    # a tile sees part of a face larger and may take a feature of it (an eye, the mouth) for a face: a
    # tile box mostly inside a whole-image face and under half its size is that (on 300-W: a 55 px box
    # inside a 208 px face); a neighbour's face half inside a wide box is not (two WFLW faces)
    tile_boxes = [b for b in tile_boxes if not any(inside(b.xyxy(), k.xyxy()) > 0.5 and b.side_px < 0.5 * k.side_px
                                                   for k in whole)]
    return merge_boxes(tile_boxes, keep=whole)   # whole-image boxes win


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    """Area shared by two xyxy boxes."""
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def inside(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of xyxy box a that lies inside xyxy box b."""
    return _intersection(a, b) / max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class HaarDetector:
    name = "haar"

    def __init__(self, min_size_px: int = 20, calibration: BoxCalibration | None = None):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cc = cv2.CascadeClassifier(path)
        if self._cc.empty():
            raise RuntimeError(f"OpenCV's Haar cascade is missing at {path}; reinstall opencv-contrib-python")
        self.min_size_px = min_size_px
        self.calibration = calibration or CALIBRATION[self.name]

    def raw(self, image_bgr: np.ndarray, model: str = "haar") -> list[tuple[float, float, float, float, float]]:
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
