"""Batch extraction throughput: one process vs worker processes vs a local Ray cluster vs all inputs
batched through one network (the GPU path), with the HIH landmarker and with MediaPipe Face Mesh, on
the same clips in the same run.

    python run.py bench extract [--clips 6] [--frames 150]

Each configuration extracts every clip from scratch (fresh output folder); time is wall clock from
the call to the last finished recording, model loading and worker start-up included, as a user
waits for it. Reported: frames/s, videos/hour (of these clips), and the speed-up over one process.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

CONFIGS = [("hih", "1 process", {"workers": 1}), ("hih", "2 workers", {"workers": 2}), ("hih", "Ray local (2 CPUs)", {"ray": "local"}),
           ("hih", "1 process, all videos batched", {"batch": True}),
           ("mediapipe", "1 process", {"workers": 1}), ("mediapipe", "2 workers", {"workers": 2}),
           ("mediapipe", "Ray local (2 CPUs)", {"ray": "local"})]


def _clips(folder: Path, n: int, frames: int) -> list[Path]:
    from stream.demo import DemoSource
    from stream.video_writer import VideoWriter
    paths = []
    for i in range(n):
        demo = DemoSource(frames=frames, seed=i)
        path = folder / f"clip{i}.mp4"
        writer = VideoWriter(path, demo.fps, overwrite=True)
        for image, ts in demo.frames():
            writer.write(image, ts)
        writer.close()
        paths.append(path)
    return paths


def run_extract_bench(out: Path, clips: int = 6, frames: int = 150, log=print) -> str:
    from hihtrack.extract import plan, run_batched, run_local, run_ray
    from stream.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="hihtrack-bench-extract-"))
    try:
        inputs = [str(p) for p in _clips(work, clips, frames)]
        rows = []
        for landmarker, how, kw in CONFIGS:
            dest = work / f"out-{landmarker}-{len(rows)}"
            jobs = plan(inputs, dest, "csv")
            settings = load_settings(landmarker=landmarker)
            t0 = time.perf_counter()
            if "ray" in kw:
                results = run_ray(jobs, settings, "csv", kw["ray"], lambda r: r)
            elif "batch" in kw:
                results = run_batched(jobs, settings, "csv", len(jobs), lambda n: None, lambda r: r)
            else:
                results = run_local(jobs, settings, "csv", kw["workers"], lambda n: None, lambda r: r)
            wall_s = time.perf_counter() - t0
            errors = [r.error for r in results if r.error]
            n = sum(r.frames for r in results)
            rows.append({"landmarker": landmarker, "how": how, "frames": n, "wall_s": wall_s, "fps": n / wall_s,
                         "videos_per_hour": len(results) * 3600 / wall_s, "errors": errors})
            log(f"{landmarker:9s} {how:20s} {n} frames in {wall_s:.1f} s = {n / wall_s:.1f} frames/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extract.json").write_text(json.dumps(rows, indent=1))
    base = {r["landmarker"]: r["fps"] for r in rows if r["how"] == "1 process"}
    lines = [f"# Batch extraction throughput ({clips} demo clips x {frames} frames, 640x480, this 2-core CPU)", "",
             "Wall clock per configuration, model loading and worker start-up included.", "",
             "| landmarker | how | frames | wall s | frames/s | videos/hour | vs 1 process |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['landmarker']} | {r['how']} | {r['frames']} | {r['wall_s']:.1f} | {r['fps']:.1f} | "
                     f"{r['videos_per_hour']:.0f} | {r['fps'] / base[r['landmarker']]:.2f}x |")
    hih = {r["how"]: r["fps"] for r in rows if r["landmarker"] == "hih"}
    mp = {r["how"]: r["fps"] for r in rows if r["landmarker"] == "mediapipe"}
    lines += ["", "hih / MediaPipe frames/s, same configuration: " +
              ", ".join(f"{how} {hih[how] / mp[how]:.2f}x" for how in hih if how in mp)]
    _plot(rows, out / "extract.png")
    table = "\n".join(lines) + "\n"
    (out / "extract.md").write_text(table)
    return table


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hows = list(dict.fromkeys(r["how"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, lm in enumerate(("hih", "mediapipe")):
        vals = [next((r["fps"] for r in rows if r["how"] == h and r["landmarker"] == lm), 0) for h in hows]
        ax.bar([i + 0.4 * k for i in range(len(hows))], vals, width=0.4, label=lm)
    ax.set_xticks([i + 0.2 for i in range(len(hows))], hows)
    ax.set_ylabel("frames / s (whole run)")
    ax.set_title("run.py extract throughput, 2-core CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
