"""The model table: accuracy against cost for every shipped landmark network and the competitors.

    python run.py bench models [--data ../shared/data] [--weights CANDIDATE.pt]

Per model: NME on 300-W common and WFLW-206 (the user path, the tracker's own detector and crops;
then ground-truth boxes) from `models.evaluate`, and ms per face on 1 and 2 onnxruntime threads
for the network alone and for the whole landmark call (crop, network, decode, back to image px), on
a real 300-W face at batch 1. MediaPipe Face Mesh and PFLD are measured in the same run; MediaPipe
sets its own threads, so it has one cost column.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from bench.pipeline import median_ms
from models.data import load_faces
from models.detector import FaceBox
from models.engine import SHIPPED_WEIGHTS, LandmarkEngine
from models.evaluate import MEDIAPIPE_NAME, PROTOCOLS, PFLDLandmarker, evaluate
from models.schemes import to_68

THREADS = (1, 2)
REPS = 200
SETS = {"300w": "300-W common", "wflw": "WFLW-206"}


def _params_m(weights: Path) -> float:
    from models.network import build_network, count_params
    from models.train import Recipe
    from models.weights import load_checkpoint
    return count_params(build_network(Recipe.from_dict(load_checkpoint(weights)["recipe"]).model)) / 1e6


def hih_costs(weights: Path, image: np.ndarray, box: FaceBox) -> dict[str, float]:
    """ms per face for the network alone and the whole landmark call, per onnxruntime thread count."""
    out = {}
    for threads in THREADS:
        eng = LandmarkEngine(weights, "cpu", threads=threads, backend="onnxruntime")
        m = eng.crop_matrices(box.center_px[None], np.array([box.side_px]))
        crops = eng.crops(image, m)
        out[f"network_{threads}t"] = median_ms(lambda eng=eng, crops=crops: eng.runner(crops), REPS)
        out[f"call_{threads}t"] = median_ms(lambda eng=eng, m=m: eng.landmarks(image, m), REPS)
    return out


def competitor_costs(image: np.ndarray, box: FaceBox) -> dict[str, dict[str, float]]:
    from models.landmarkers import MediaPipeLandmarker
    mp = MediaPipeLandmarker()
    out = {MEDIAPIPE_NAME: {"call_1t": median_ms(lambda: mp(image, [box]), REPS)}}
    out[PFLDLandmarker.name] = {f"call_{t}t": median_ms(lambda lm=PFLDLandmarker(threads=t): lm(image, [box]), REPS) for t in THREADS}
    return out


def run_models_bench(data: Path, out_dir: Path, log=print, candidates: tuple[Path, ...] = ()) -> str:
    """The table for the shipped weights and, beside them, any `candidates` (checkpoints not shipped)."""
    networks = {f"hih {name}": weights for name, weights in SHIPPED_WEIGHTS.items()}
    networks.update({f"candidate {path.stem}": path for path in candidates})
    faces = {name: load_faces(data / name, "test") for name in SETS if (data / name).exists()}
    if "300w" not in faces:
        raise FileNotFoundError(f"no 300w/ under {data}: pass --data, the folder that holds 300w/ and wflw/")
    probe = faces["300w"][0]
    image, box = cv2.imread(str(probe.image_path)), FaceBox.from_landmarks(to_68(probe.landmarks_px))
    rows: dict[str, dict] = {}
    for i, (label, weights) in enumerate(networks.items()):
        rows[label] = {"params_m": _params_m(weights), **hih_costs(weights, image, box)}
        for set_name, set_faces in faces.items():
            for protocol in PROTOCOLS:
                log(f"{label}: {SETS[set_name]}, {protocol} protocol")
                res = evaluate(set_faces, weights, ["mediapipe", "pfld"] if i == 0 else [], ("hih",), protocol=protocol)
                for method, r in res.rows.items():
                    key = label if method.startswith("hihtrack") else method
                    rows.setdefault(key, {})[f"{set_name}_{protocol}"] = r["nme"]
                    rows[key][f"{set_name}_{protocol}_found"] = r["detected"]
    for method, costs in competitor_costs(image, box).items():
        rows.setdefault(method, {}).update(costs)
    result = {"machine": _machine(),
              "date": date.today().isoformat(), "faces": {k: len(v) for k, v in faces.items()}, "rows": rows}
    return _write(result, out_dir)


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores"


def _cell(r: dict, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(r[key]) if key in r else "-"


def _write(result: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "models.json").write_text(json.dumps(result, indent=1))
    sets = [s for s in SETS if s in result["faces"]]
    head = " | ".join(f"{SETS[s]} user path / gt box" for s in sets)
    lines = [f"Models on {result['machine']}, {result['date']}; NME % (faces found on the user path in brackets), "
             "ms per face at batch 1", "",
             f"| model | params M | {head} | network ms 1 / 2 threads | whole landmark call ms 1 / 2 threads |",
             "|---|---|" + "---|" * len(sets) + "---|---|"]
    for name, r in result["rows"].items():
        acc = " | ".join(f"{_cell(r, f'{s}_detector')} ({r.get(f'{s}_detector_found', '-')}) / {_cell(r, f'{s}_gt-box')}"
                         for s in sets)
        lines.append(f"| {name} | {_cell(r, 'params_m')} | {acc} | {_cell(r, 'network_1t')} / {_cell(r, 'network_2t')} "
                     f"| {_cell(r, 'call_1t')} / {_cell(r, 'call_2t')} |")
    md = "\n".join(lines) + "\n"
    (out_dir / "models.md").write_text(md)
    _plot(result, out_dir / "models.png")
    return md


def _plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in result["rows"].items():
        if "300w_detector" in r and "call_1t" in r:
            ax.scatter(r["call_1t"], r["300w_detector"])
            ax.annotate(name, (r["call_1t"], r["300w_detector"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("whole landmark call, ms per face, 1 thread")
    ax.set_ylabel("300-W common NME %, user path")
    ax.set_title(f"accuracy against cost ({result['date']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
