"""Measure how each detector's box relates to the 68-landmark extent square on 300-W test faces.

    python -m bench.detector_calibration [--data ../shared/data/300w]

Writes bench/results/detector_calibration.json; models/detector.py CALIBRATION holds the result.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from models.data import load_faces
from models.detector import BlazeFaceDetector, FaceBox, HaarDetector


def calibrate(detector, faces) -> dict:
    rows = []
    for f in faces:
        img = cv2.imread(str(f.image_path))
        gt = FaceBox.from_landmarks(f.landmarks_px)
        raw = detector.raw(img)
        if not raw:
            continue
        # the detection closest to the annotated face
        x, y, w, h, _ = min(raw, key=lambda r: np.hypot(r[0] + r[2] / 2 - gt.center_px[0], r[1] + r[3] / 2 - gt.center_px[1]))
        s = max(w, h)
        rows.append([gt.side_px / s, (gt.center_px[0] - x - w / 2) / s, (gt.center_px[1] - y - h / 2) / s])
    r = np.median(np.array(rows), 0)
    return {"scale": round(float(r[0]), 3), "shift_x": round(float(r[1]), 3), "shift_y": round(float(r[2]), 3),
            "detected": len(rows), "faces": len(faces)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/300w"))
    args = ap.parse_args()
    faces = load_faces(args.data, "test")
    out = {d.name: calibrate(d, faces) for d in (BlazeFaceDetector(), HaarDetector())}
    print(json.dumps(out, indent=1))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/detector_calibration.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
