"""Measure how each detector's box relates to the 68-landmark extent square, and its recall.

    python -m bench.detector_calibration [--data ../shared/data/300w]

The box-to-square correction is fitted on the 300-W training faces (median over the detected ones);
recall and the remaining box error are reported on the test faces. Writes
bench/results/detector_calibration.json; models/detector.py CALIBRATION holds the fitted values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from models.data import load_faces
from models.detector import BlazeFaceDetector, FaceBox, HaarDetector


def _matches(detector, model: str, faces) -> np.ndarray:
    """(N,3) per detected face: square side / box side, centre shift x, y in box sides (the box whose
    centre is within half a face side of the annotated face's)."""
    rows = []
    for f in faces:
        gt = FaceBox.from_landmarks(f.landmarks_px)
        near = [r for r in detector.raw(cv2.imread(str(f.image_path)), model)
                if np.abs(np.array([r[0] + r[2] / 2, r[1] + r[3] / 2]) - gt.center_px).max() < gt.side_px / 2]
        if near:
            x, y, w, h, _ = max(near, key=lambda r: r[4])
            s = max(w, h)
            rows.append([gt.side_px / s, (gt.center_px[0] - x - w / 2) / s, (gt.center_px[1] - y - h / 2) / s])
    return np.array(rows).reshape(-1, 3)


def calibrate(detector, model: str, train, test) -> dict:
    fit = np.median(_matches(detector, model, train), 0)
    t = _matches(detector, model, test)
    # remaining error on the test faces once corrected: centre (fraction of the face) and size ratio
    centre_err = np.hypot(t[:, 1] - fit[1], t[:, 2] - fit[2]) / t[:, 0] if len(t) else np.array([np.nan])
    return {"scale": round(float(fit[0]), 3), "shift_x": round(float(fit[1]), 3), "shift_y": round(float(fit[2]), 3),
            "test_detected": len(t), "test_faces": len(test),
            "test_centre_error_median": round(float(np.median(centre_err)), 3),
            "test_centre_error_p90": round(float(np.percentile(centre_err, 90)), 3),
            "test_size_ratio_median": round(float(np.median(fit[0] / t[:, 0])), 3) if len(t) else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/300w"))
    args = ap.parse_args()
    train, test = load_faces(args.data, "train"), load_faces(args.data, "test")
    blaze = BlazeFaceDetector()
    out = {f"blazeface-{m}": calibrate(blaze, m, train, test) for m in ("short", "full")}
    out["haar"] = calibrate(HaarDetector(), "haar", train, test)
    print(json.dumps(out, indent=1))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/detector_calibration.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
