"""End-to-end pipeline benchmark: hih vs mediapipe in the same run, per source / size / face count.

    python run.py bench pipeline [--minutes 5]

Every configuration runs in its own process (clean peak-RSS): capture -> detect/track -> landmarks
-> smooth, consumer drawing nothing. Reported: FPS, p50/p95/p99 capture-to-output latency,
per-stage p50, dropped frames, CPU % (process CPU time / wall, of one core), peak RSS. Then one
real-time-paced 30 fps run of `--minutes` to check that latency stays flat (no queue growth).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _make_video(path: Path, size: tuple[int, int], frames: int = 150) -> None:
    import cv2

    from stream.demo import DemoSource
    from stream.video_writer import VideoWriter
    demo = DemoSource(frames=frames)
    w = VideoWriter(path, 30.0, overwrite=True)
    for img, ts in demo.frames():
        w.write(cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) if img.shape[1] != size[0] else img, ts)
    w.close()


def one_run(source: str, landmarker: str, max_frames: int, realtime: bool) -> dict:
    """In a fresh process: run the pipeline, return its measurements."""
    from models.detector import build_detector
    from models.landmarkers import build_landmarker
    from stream.pipeline import Pipeline
    from stream.sources import open_source
    from stream.tracking import Tracker

    src = open_source(source, realtime=realtime, demo_frames=max_frames)
    lm = build_landmarker(landmarker)
    pipe = Pipeline(src, Tracker(build_detector("blazeface")), lm)
    cpu0, t0 = time.process_time(), time.perf_counter()
    lat_t = []
    faces = []
    with pipe:
        for frame in pipe.results():
            lat_t.append((time.perf_counter() - t0, frame.latency_ms()))
            faces.append(len(frame.faces))
            if pipe.stats.frames_out >= max_frames:
                break
    wall = time.perf_counter() - t0
    s = pipe.stats.summary()
    s.update({"look_ahead_runs": pipe.look_ahead_runs, "look_ahead_used": pipe.look_ahead_used,
              "cpu_pct": 100 * (time.process_time() - cpu0) / wall,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "mean_faces": float(np.mean(faces)) if faces else 0.0, "latency_trace": lat_t[:: max(1, len(lat_t) // 400)]})
    return s


def _in_fresh_process(call: str) -> dict:
    """`call` (a function of this module with its arguments, as code) run in a new process: clean
    peak RSS and no state shared between configurations -> its JSON result."""
    code = f"import json; from bench import pipeline; print('RESULT' + json.dumps(pipeline.{call}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"benchmark run failed: {r.stderr[-500:]}")
    return json.loads(line[6:])


def _subprocess(source: str, landmarker: str, frames: int, realtime: bool) -> dict:
    return _in_fresh_process(f"one_run({source!r}, {landmarker!r}, {frames}, {realtime})")


def median_ms(fn, reps: int) -> float:
    """Median ms of `reps` calls after 5 warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


class _Answered:
    """A runner whose network has already answered: submit hands back that result (stage_costs)."""

    def __init__(self, result: np.ndarray):
        self.result = result

    def submit(self, crops_u8: np.ndarray) -> np.ndarray:
        return self.result.copy()      # the caller reorders mirrored views in place

    @staticmethod
    def collect(result: np.ndarray) -> np.ndarray:
        return result


def stage_costs(landmarker: str = "hih", weights: str | None = None, reps: int = 200) -> dict[str, float]:
    """ms per frame of each step of tracking one face, each called on its own in this process (the
    demo clip's face, tracked): the work the pipeline's threads share out, without the threads."""
    from hihtrack import FaceTracker, load_settings
    from models.eyes import with_eye_outline
    from models.schemes import to_68
    from stream.demo import DemoSource
    from stream.expressions import ExpressionEstimator
    from stream.pose import estimate_pose
    from stream.smoothing import build_smoother

    demo = DemoSource(frames=reps + 60)
    images = [img for img, _ in demo.frames()]
    tracker = FaceTracker(load_settings(landmarker=landmarker, weights=weights), running_mode="video")
    face = None
    for i, img in enumerate(images[:60]):                   # a settled track, as in a running stream
        face = tracker.process(img, timestamp_s=i / 30).faces[0]
    img, lm, size = images[59], tracker.landmarker, (images[0].shape[1], images[0].shape[0])
    out: dict[str, float] = {"detector (per run)": median_ms(lambda: tracker.detector(img), 30)}
    out["detector, amortized (every detect_every frames)"] = out["detector (per run)"] / tracker.settings.tracking.detect_every
    if landmarker == "hih":
        eng = lm.engine
        m = lm.matrices([face.box])
        crops = eng.crops(img, m)
        out["landmark network"] = median_ms(lambda: eng.runner(crops), reps)
        # the landmark call with the network's answer ready: its own work timed alone (the whole call
        # less the network would be mostly the network's spread, 0.5 ms where this work takes 0.15)
        network, eng.runner = eng.runner, _Answered(eng.runner(crops))
        out["crop, views, back to image px"] = median_ms(lambda: eng.landmarks(img, m), reps)
        eng.runner = network
    else:
        out["landmark network"] = median_ms(lambda: lm(img, [face.box]), reps)
        out["crop, views, back to image px"] = 0.0
    smoother, t = build_smoother(tracker.settings.smoothing, tracker.settings.smoothing_settings()), [0.0]

    def smooth():
        t[0] += 1 / 30
        smoother.update(face.landmarks_px, face.confidence, t[0], face.box.side_px)

    out["smoothing"] = median_ms(smooth, reps)

    def poses():                      # a tracked face: last frame's pose starts the raw fit
        raw = estimate_pose(face.landmarks_px, size, near=face.pose_smoothed)
        estimate_pose(face.smoothed_px, size, near=raw)

    out["head pose (raw and smoothed)"] = median_ms(poses, reps)
    find = getattr(lm, "eyes", None)
    out["eyes: pupils and outline (eye crops and network)"] = median_ms(lambda: find(img, [face.smoothed_px]), reps) if find else 0.0
    est, yaw = ExpressionEstimator(), float(face.pose_smoothed.rotation_deg[0])
    # as the pipeline does: the eye shapes on the mean of the landmarks' and the eye network's eye outline
    out["expressions"] = median_ms(
        lambda: est.blendshapes(with_eye_outline(to_68(face.smoothed_px), face.eye_outline_px), yaw, face.pupils_px), reps)
    k = [60]

    def whole():
        k[0] += 1
        tracker.process(images[k[0] % len(images)], timestamp_s=k[0] / 30)

    out["whole frame, steps in a row (FaceTracker.process)"] = median_ms(whole, reps)
    out["beyond the networks: crop, decode, smoothing, pose, expressions"] = sum(
        out[key] for key in ("crop, views, back to image px", "smoothing", "head pose (raw and smoothed)", "expressions"))
    tracker.close()
    return out


def _costs_table(costs: dict[str, dict[str, float]]) -> str:
    names = list(costs)
    lines = [f"| step (ms per frame, 1 face) | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for step in next(iter(costs.values())):
        lines.append(f"| {step} | {' | '.join(f'{costs[n][step]:.2f}' for n in names)} |")
    return "\n".join(lines) + "\n"


PACED_ROUNDS = 3      # real-time paced runs per landmarker, alternating, `minutes` split among them

# the demo clip and the file that holds its frames: the pair the demo-vs-file ratio compares
DEMO_ROW, FILE_ROW = "demo clip 640x480, 1 face", "video file 640x480, 1 face"


def run_pipeline_bench(out_dir: Path, minutes: float = 5.0, frames: int = 300, repeats: int = 5) -> str:
    """Each source with each landmarker `repeats` times, in rounds of all of them; each row is the run
    of median FPS."""
    tmp = Path(tempfile.mkdtemp(prefix="hihtrack-bench-"))
    videos = {"640x480": tmp / "v640.mp4", "1280x720": tmp / "v1280.mp4"}
    _make_video(videos["640x480"], (640, 480), frames)
    _make_video(videos["1280x720"], (1280, 720), frames)
    configs = [(DEMO_ROW, "demo"), ("demo clip 640x480, 3 faces", "demo:3"), (FILE_ROW, str(videos["640x480"])),
               ("video file 1280x720, 1 face", str(videos["1280x720"]))]
    # every source and landmarker once per round, rounds repeated: a slow spell of the machine falls on
    # all of them alike, so the ratios between rows (hih / MediaPipe, demo / file) compare like with like
    runs: dict[tuple[str, str], list[dict]] = {(name, lm): [] for name, _ in configs for lm in ("hih", "mediapipe")}
    for _ in range(repeats):
        for name, src in configs:
            for lm in ("hih", "mediapipe"):
                runs[name, lm].append(_subprocess(src, lm, frames, False))
    rows = []
    for name, _ in configs:
        for lm in ("hih", "mediapipe"):
            kept = runs[name, lm]
            r = sorted(kept, key=lambda run: run["fps"])[len(kept) // 2]
            rows.append({"config": name, "landmarker": lm, "fps_runs": [run["fps"] for run in kept],
                         **{k: v for k, v in r.items() if k != "latency_trace"}})
            print(f"{name:30s} {lm:10s} {r['fps']:6.1f} fps  p50 {r['latency_p50_ms']:.0f} ms", file=sys.stderr)
    # paced live runs in rounds as well: a fresh process's p50 moves by 1-2 ms from run to run here,
    # as much as the gap between the landmarkers
    paced: dict[str, list[dict]] = {"hih": [], "mediapipe": []}
    if minutes > 0:
        n = int(minutes * 60 * 30 / PACED_ROUNDS)
        for _ in range(PACED_ROUNDS):
            for lm in paced:
                paced[lm].append(_subprocess("demo", lm, n, True))
    soak = {lm: {**sorted(rs, key=lambda r: r["latency_p50_ms"])[len(rs) // 2],
                 "p50_runs": [r["latency_p50_ms"] for r in rs], "p95_runs": [r["latency_p95_ms"] for r in rs]}
            for lm, rs in paced.items() if rs}
    costs = {name: _in_fresh_process(f"stage_costs({lm!r}, {w!r})") for name, lm, w in
             (("hih small", "hih", "small"), ("hih fast", "hih", "fast"), ("mediapipe", "mediapipe", None))}
    result = {"rows": rows, "paced": soak, "minutes": minutes,
              "stage_costs": costs}
    return _write(result, out_dir)


def _write(result: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pipeline.json").write_text(json.dumps(result, indent=1))
    lines = ["| source | landmarker | FPS | latency p50 / p95 / p99 ms | landmarks p50 ms | detect p50 ms | dropped | CPU % "
             "| peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        st = r["stage_p50_ms"]
        lines.append(f"| {r['config']} | {r['landmarker']} | {r['fps']:.1f} | {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} / "
                     f"{r['latency_p99_ms']:.0f} | {st.get('landmarks', float('nan')):.1f} | {st.get('detect', float('nan')):.1f} | "
                     f"{r['dropped']} | {r['cpu_pct']:.0f} | {r['peak_rss_mb']:.0f} |")
    fps = {(r["config"], r["landmarker"]): r["fps"] for r in result["rows"]}
    configs = list(dict.fromkeys(r["config"] for r in result["rows"]))
    lines += ["", "FPS ratios, hih / MediaPipe: " + ", ".join(
        f"{c} {fps[c, 'hih'] / fps[c, 'mediapipe']:.2f}x" for c in configs if (c, "mediapipe") in fps)]
    if (DEMO_ROW, "hih") in fps and (FILE_ROW, "hih") in fps:
        lines.append(f"The demo clip against the same frames read from a file, hih: "
                     f"{fps[DEMO_ROW, 'hih'] / fps[FILE_ROW, 'hih']:.2f}x")
    ahead = [f"{r['config']} {r['look_ahead_used']} of {r['look_ahead_runs']}" for r in result["rows"]
             if r.get("look_ahead_runs")]
    if ahead:
        lines.append("Next frames run ahead (look-ahead), used of run, hih: " + ", ".join(ahead))
    lines.append("")
    lines.append(f"Each row is the median-FPS run of {len(result['rows'][0].get('fps_runs', [0]))}, run in rounds of "
                 "every source and landmarker. File sources run as fast as possible (every frame kept: latency includes queueing); "
                 "CPU % is of one core (200 % = both cores). The video files hold the demo clip's frames.")
    for lm, r in result["paced"].items():
        trace = np.array(r["latency_trace"])
        first = trace[trace[:, 0] < 60, 1]
        last = trace[trace[:, 0] > trace[-1, 0] - 60, 1]
        rounds = r["p50_runs"]
        lines.append(f"\nReal-time paced 30 fps, {len(rounds)} rounds of {result['minutes'] / len(rounds):.1f} min, {lm} (the "
                     f"round of median p50): {r['fps']:.1f} FPS, latency p50 {r['latency_p50_ms']:.1f} ms / p95 "
                     f"{r['latency_p95_ms']:.1f} ms; first minute p50 {np.median(first):.0f} ms, last minute p50 "
                     f"{np.median(last):.0f} ms; dropped {r['dropped']}; peak RSS {r['peak_rss_mb']:.0f} MB; p50 / p95 of each "
                     "round: " + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(rounds, r["p95_runs"])))
    if result.get("stage_costs"):
        lines += ["", "Per step, each on its own in one process (`stage_costs`):", "", _costs_table(result["stage_costs"])]
    md = "\n".join(lines) + "\n"
    (out_dir / "pipeline.md").write_text(md)
    if result["paced"]:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for lm, r in result["paced"].items():
            trace = np.array(r["latency_trace"])
            ax.plot(trace[:, 0], trace[:, 1], lw=0.8, label=lm)
        ax.set_xlabel("time (s)"); ax.set_ylabel("capture-to-output latency (ms)"); ax.set_title("real-time paced 30 fps")
        ax.legend(); ax.grid(alpha=0.3); fig.tight_layout(); fig.savefig(out_dir / "pipeline_latency.png", dpi=90); plt.close(fig)
    return md
