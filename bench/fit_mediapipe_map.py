"""Fit the Face Mesh (478) -> iBUG-68 index map on 300-W *training* faces.

For each of the 68 points, the mesh vertex whose position is closest to it on average
(normalised by the inter-ocular distance) over the faces. Written to bench/results/mediapipe_to_68.json;
models/schemes.py MEDIAPIPE_TO_68 holds the result. Test faces are never used.

    python -m bench.fit_mediapipe_map [--faces 400]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from models.data import load_faces
from models.detector import FaceBox
from models.landmarkers import MediaPipeLandmarker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/300w"))
    ap.add_argument("--faces", type=int, default=400)
    args = ap.parse_args()
    faces = load_faces(args.data, "train")
    faces = [faces[i] for i in np.random.default_rng(0).permutation(len(faces))[: args.faces]]
    lm = MediaPipeLandmarker()
    dist = np.zeros((68, 478))
    n = 0
    for f in faces:
        res = lm(cv2.imread(str(f.image_path)), [FaceBox.from_landmarks(f.landmarks_px)])[0]
        if res is None:
            continue
        io = np.linalg.norm(f.landmarks_px[36] - f.landmarks_px[45])
        dist += np.linalg.norm(f.landmarks_px[:, None] - res.landmarks_px[None], axis=-1) / io
        n += 1
    mapping = dist.argmin(1).tolist()
    out = {"map": mapping, "faces": n, "mean_nme_of_map": float((dist.min(1) / n).mean() * 100)}
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/mediapipe_to_68.json").write_text(json.dumps(out))
    print(out)


if __name__ == "__main__":
    main()
