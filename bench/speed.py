"""Landmark-stage speed: model alone and whole stage (crop + infer + decode + back to image px),
per batch size, per precision; CUDA-streams overlap on vs off; MediaPipe Face Mesh ms/face.

    python run.py bench speed [--device cuda] [--quick]

Imports only torch, numpy and OpenCV at module level, so it also runs on the GPU machine.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from models.engine import DEFAULT_WEIGHTS, LandmarkEngine

BATCHES = (1, 2, 4, 8, 16)


def _time(fn, reps: int, sync=lambda: None) -> float:
    """Median ms of `reps` calls after warm-up."""
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _frame_and_boxes(n: int):
    """A 1280x720 frame with n face squares on a grid (content does not change the cost)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    cols = int(np.ceil(np.sqrt(n)))
    centers = np.array([[160 + (i % cols) * 1000 / cols, 120 + (i // cols) * 500 / cols] for i in range(n)], np.float64)
    return img, centers, np.full(n, 120.0)


def run_speed(device: str = "cpu", out_dir: Path = Path("bench/results"), quick: bool = False,
              weights: Path = DEFAULT_WEIGHTS) -> str:
    reps = 10 if quick else 30
    precisions = ("fp32",) if device == "cpu" else ("fp32", "fp16", "bf16")
    rows = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for prec in precisions:
        eng = LandmarkEngine(weights, device, prec, streams=2)
        for b in BATCHES:
            img, centers, sides = _frame_and_boxes(b)
            m = eng.crop_matrices(centers, sides)
            x = torch.from_numpy(eng.crops(img, m)).to(eng.device)

            def model_only(eng=eng, x=x):      # the inference graph on crops already on the device
                eng.runner.forward(x)

            ms_model = _time(model_only, reps, sync)
            ms_stage = _time(lambda eng=eng, img=img, m=m: eng.landmarks(img, m), reps, sync)
            rows.append({"device": device, "precision": prec, "batch": b, "model_ms": ms_model, "stage_ms": ms_stage,
                         "model_faces_s": 1000 * b / ms_model, "stage_faces_s": 1000 * b / ms_stage,
                         "stage_ms_per_face": ms_stage / b})
    overlap, large = None, []
    if device.startswith("cuda"):
        overlap = _streams_overlap(LandmarkEngine(weights, device, "fp16", streams=2), reps)
        large = _large_batches(LandmarkEngine(weights, device, "bf16"), reps, sync)
    mp_ms = _mediapipe_ms_per_face(reps) if device == "cpu" else None
    result = {"device": device, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
              "weights": str(Path(weights).name), "rows": rows, "streams_overlap": overlap, "large_batches": large,
              "mediapipe_ms_per_face": mp_ms}
    return _write(result, out_dir)


def _streams_overlap(eng: LandmarkEngine, reps: int) -> dict:
    """The landmark stage as tracking and extract run it (landmarks_many: frames uploaded and cropped
    on the device), 20 batches of 16 faces from 16 frames: one at a time (submit, wait) vs two on the
    stream ring at once (the next batch's upload overlapping this one's compute, as extract's
    batcher keeps them)."""
    img, centers, sides = _frame_and_boxes(16)
    items = [(img, eng.crop_matrices(c[None], np.array([s]))) for c, s in zip(centers, sides)]
    n_batches = 20

    def serial():
        for _ in range(n_batches):
            eng.collect_many(eng.submit_many(items))

    def overlapped():
        pending = None
        for _ in range(n_batches):
            nxt = eng.submit_many(items)           # returns at once
            if pending is not None:
                eng.collect_many(pending)
            pending = nxt
        eng.collect_many(pending)

    off = _time(serial, max(3, reps // 5))
    on = _time(overlapped, max(3, reps // 5))
    return {"batches": n_batches, "faces_per_batch": 16, "serial_ms": off, "overlapped_ms": on,
            "serial_faces_s": 1000 * n_batches * 16 / off, "overlapped_faces_s": 1000 * n_batches * 16 / on}


LARGE_BATCHES = (64, 256, 1024)


def _large_batches(eng: LandmarkEngine, reps: int, sync) -> list[dict]:
    """The batched-extraction regime (faces of many videos per launch): whole landmark stage for one
    720p frame's worth of faces, crops made by OpenCV on the host vs by grid_sample on the device."""
    rows = []
    for b in LARGE_BATCHES:
        img, centers, sides = _frame_and_boxes(b)
        m = eng.crop_matrices(centers, sides)
        eng.max_batch = b
        for on_device in (False, True):
            ms = _time(lambda img=img, m=m, on_device=on_device: eng.landmarks_many([(img, m)], device_crops=on_device),
                       max(3, reps // 3), sync)
            rows.append({"batch": b, "crops": "device" if on_device else "host", "stage_ms": ms, "stage_faces_s": 1000 * b / ms})
    return rows


def _mediapipe_ms_per_face(reps: int) -> float | None:
    try:
        from models.detector import FaceBox
        from models.landmarkers import MediaPipeLandmarker
        from stream.demo import DemoSource
    except ImportError:
        return None
    src = DemoSource(frames=1)
    img = src.render(0)
    c, s = src.true_boxes(0)[0]
    lm = MediaPipeLandmarker()
    return _time(lambda: lm(img, [FaceBox(c, s)]), reps)


def _write(result: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if result["device"].startswith("cuda") else "cpu"
    (out_dir / f"speed_{tag}.json").write_text(json.dumps(result, indent=1))
    hw = result["gpu"] or f"{result['cpu']}, {result['threads']} torch threads"
    lines = [f"Landmark stage speed on {hw} (hih_small, 128 px input)", "",
             "| precision | batch | model ms | model faces/s | stage ms | stage ms/face | stage faces/s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['batch']} | {r['model_ms']:.2f} | {r['model_faces_s']:.0f} | "
                     f"{r['stage_ms']:.2f} | {r['stage_ms_per_face']:.2f} | {r['stage_faces_s']:.0f} |")
    if result["streams_overlap"]:
        o = result["streams_overlap"]
        lines += ["", f"CUDA streams, {o['batches']} batches of {o['faces_per_batch']} faces (fp16, crops on CPU): "
                  f"serial {o['serial_ms']:.1f} ms ({o['serial_faces_s']:.0f} faces/s), overlapped "
                  f"{o['overlapped_ms']:.1f} ms ({o['overlapped_faces_s']:.0f} faces/s)"]
    if result.get("large_batches"):
        lines += ["", "Large batches (bf16), whole stage, crops on the host (OpenCV) vs on the device (grid_sample):", "",
                  "| batch | crops | stage ms | stage faces/s |", "|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['crops']} | {r['stage_ms']:.2f} | {r['stage_faces_s']:.0f} |"
                  for r in result["large_batches"]]
    if result["mediapipe_ms_per_face"]:
        lines += ["", f"MediaPipe Face Mesh (same machine, one face crop): {result['mediapipe_ms_per_face']:.2f} ms/face"]
    md = "\n".join(lines) + "\n"
    (out_dir / f"speed_{tag}.md").write_text(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for prec in sorted({r["precision"] for r in result["rows"]}):
            rs = [r for r in result["rows"] if r["precision"] == prec]
            ax.plot([r["batch"] for r in rs], [r["stage_ms_per_face"] for r in rs], "o-", label=f"stage {prec}")
            ax.plot([r["batch"] for r in rs], [r["model_ms"] / r["batch"] for r in rs], "x--", label=f"model {prec}")
        if result["mediapipe_ms_per_face"]:
            ax.axhline(result["mediapipe_ms_per_face"], color="k", ls=":", label="MediaPipe Face Mesh")
        ax.set_xscale("log", base=2); ax.set_xlabel("faces per batch"); ax.set_ylabel("ms per face")
        ax.set_title(hw, fontsize=8); ax.legend(fontsize=7); ax.grid(alpha=0.3)
        fig.tight_layout(); fig.savefig(out_dir / f"speed_{tag}.png", dpi=90); plt.close(fig)
    except ImportError:
        pass
    return md
