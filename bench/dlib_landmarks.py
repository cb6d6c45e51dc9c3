"""dlib's 68-point shape predictor as a competitor, run in the benchmark environment.

dlib comes from PyPI `dlib-bin` and its model from `face-recognition-models` (which imports
pkg_resources, so that environment needs setuptools<81); neither is a runtime dependency:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install dlib-bin face-recognition-models "setuptools<81" numpy
    python run.py eval --competitors mediapipe,pfld,dlib --dlib-python .venv-bench/bin/python

Box protocol: dlib's predictor was trained on its own HOG detector's boxes, so it gets those (the
detection nearest the annotated face, upsampled once as face_recognition does); a face the detector
misses gets the annotated landmark square instead, and is counted as not detected.
Input: JSON list of {"image": path, "center": [x, y], "side": s}; output: .npz with "landmarks"
(N,68,2) and "detected" (N,).
"""
from __future__ import annotations

import json
import sys

import numpy as np


def main(job_path: str, out_path: str) -> None:
    import dlib
    import face_recognition_models

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    jobs = json.load(open(job_path))
    out = np.zeros((len(jobs), 68, 2), np.float32)
    detected = np.zeros(len(jobs), bool)
    for i, job in enumerate(jobs):
        img = dlib.load_rgb_image(job["image"])
        cx, cy = job["center"]
        dets = list(detector(img, 1))
        if dets:
            best = min(dets, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
            near = ((best.center().x - cx) ** 2 + (best.center().y - cy) ** 2) ** 0.5 < 0.5 * job["side"]
        if dets and near:
            rect, detected[i] = best, True
        else:
            h = job["side"] / 2
            rect = dlib.rectangle(int(cx - h), int(cy - h), int(cx + h), int(cy + h))
        shape = predictor(img, rect)
        out[i] = [(p.x, p.y) for p in shape.parts()]
    np.savez(out_path, landmarks=out, detected=detected)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
