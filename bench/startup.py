"""Start-up times as a user meets them, each a fresh process, beside MediaPipe's own start.

    python run.py bench startup [--repeats 3]

Rows (median of the repeats, wall clock from process start):
- a bad setting's one-line error (`hihtrack track --smoothing nope`);
- the first landmark of a one-frame video file (`hihtrack track --source one.mp4 --ui none`, to exit),
  once on a fresh cache (the first run exports the networks as ONNX graphs, with torch) and then as
  every later run meets it;
- the web page answering HTTP 200 (`hihtrack track --ui gradio`);
- MediaPipe Face Mesh: import, build, and its first landmark on the same frame.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CLI = [sys.executable, "-m", "hihtrack.cli"]

MEDIAPIPE_FIRST = """
import sys, cv2, mediapipe as mp
frame = cv2.imread(sys.argv[1])
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
res = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
assert res.multi_face_landmarks, "no face"
"""


def _timed(cmd: list[str], cache: Path | None = None) -> float:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)} if cache else None
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    took = time.perf_counter() - t0
    if r.returncode not in (0, 2):
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-400:]}")
    return took


def _web_answers(port: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "track", "--ui", "gradio", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the web page did not answer within 300 s")
    finally:
        proc.terminate()
        proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_startup_bench(out_dir: Path, repeats: int = 3) -> str:
    import cv2

    from stream.demo import DemoSource
    from stream.video_writer import VideoWriter
    tmp = Path(tempfile.mkdtemp(prefix="hihtrack-startup-"))
    frame, _ = next(DemoSource(frames=1).frames())
    cv2.imwrite(str(tmp / "frame.png"), frame)
    writer = VideoWriter(str(tmp / "one.mp4"), 30.0)
    writer.write(frame, 0.0)
    writer.close()
    one_frame = [*CLI, "track", "--source", str(tmp / "one.mp4"), "--ui", "none"]
    fresh = iter(range(repeats))
    rows = {
        "bad setting -> one-line error": lambda: _timed([*CLI, "track", "--smoothing", "nope"]),
        "first landmark of a one-frame file (hih), first run: fresh cache": lambda: _timed(
            one_frame, tmp / f"fresh-cache-{next(fresh)}"),
        "first landmark of a one-frame file (hih)": lambda: _timed(one_frame),
        "first landmark of a one-frame file (--landmarker mediapipe)": lambda: _timed(
            [*CLI, "track", "--source", str(tmp / "one.mp4"), "--ui", "none", "--landmarker", "mediapipe"]),
        "web page answers": lambda: _web_answers(_free_port()),
        "MediaPipe Face Mesh alone: import to first landmark": lambda: _timed(
            [sys.executable, "-c", MEDIAPIPE_FIRST, str(tmp / "frame.png")]),
    }
    _timed(one_frame)          # the graphs in the user's cache, as after a first run, for the other rows
    results = {name: [fn() for _ in range(repeats)] for name, fn in rows.items()}
    lines = ["| start-up | median s | runs (s) |", "|---|---|---|"]
    for name, times in results.items():
        lines.append(f"| {name} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
    md = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "startup.md").write_text(md)
    (out_dir / "startup.json").write_text(json.dumps(results, indent=1))
    return md
