"""Capture-to-send latency of the avatar path: a camera-paced 30 fps source through the tracker into a
VMC sender, as a streamer's setup runs, with MediaPipe Face Mesh in the same run.

    python run.py bench avatar [--seconds 20]

Per frame: the time from capture (`Frame.captured_at`) until its last VMC datagram has left the sender
(`/VMC/Ext/Blend/Apply` and the bones), measured in the sender's own thread, with a loopback OSC receiver
listening as an avatar app would. Each landmarker runs in its own process. The lip-sync limit this is
judged against: a voice may lead the mouth by at most 45 ms (ITU-R BT.1359).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

LIP_SYNC_MS = 45.0


def one_run(landmarker: str, seconds: float) -> dict:
    """In a fresh process: demo clip paced at 30 fps -> tracker -> VMC sender to a local receiver."""
    import socket
    import threading
    import time

    from hihtrack import FaceTracker
    from stream.senders import build_sender
    from stream.settings import load_settings

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    stop = threading.Event()
    threading.Thread(target=_drain, args=(receiver, stop), daemon=True).start()
    sender = build_sender(f"osc://127.0.0.1:{receiver.getsockname()[1]}")
    latencies_ms: list[float] = []
    send = sender.send

    def timed_send(frame) -> None:           # in the sender's thread, after the frame's last datagram
        send(frame)
        latencies_ms.append((time.perf_counter() - frame.captured_at) * 1000)
    sender.send = timed_send
    frames = int(seconds * 30)
    settings = load_settings(None, landmarker=landmarker, source="demo", realtime=True, demo_frames=frames)
    with FaceTracker(settings) as tracker:
        summary = tracker.run(outputs=[sender])
    stop.set()
    lat = np.asarray(latencies_ms[30:])      # the first second warms up
    return {"landmarker": landmarker, "frames_sent": len(latencies_ms), "frames_skipped_by_sender": sender.skipped,
            "fps": summary.fps, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "max_ms": float(lat.max())}


def _drain(sock, stop) -> None:
    """The avatar app's side: take every datagram off the socket."""
    while not stop.is_set():
        try:
            sock.recv(65536)
        except OSError:
            continue


def run_avatar_bench(out_dir: Path, seconds: float = 20.0) -> str:
    rows = []
    for landmarker in ("hih", "mediapipe"):
        code = f"import json; from bench.avatar import one_run; print('RESULT' + json.dumps(one_run({landmarker!r}, {seconds})))"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
        if line is None:
            raise RuntimeError(f"avatar benchmark ({landmarker}) failed: {r.stderr[-500:]}")
        rows.append(json.loads(line[6:]))
    lines = ["| landmarker | capture-to-send p50 ms | p95 ms | max ms | tracked FPS | sent | skipped by the sender |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['landmarker']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | {r['fps']:.1f} "
                     f"| {r['frames_sent']} | {r['frames_skipped_by_sender']} |")
    md = "\n".join(lines) + f"\n\nDemo clip paced at 30 fps, {seconds:.0f} s per landmarker; lip-sync limit {LIP_SYNC_MS:.0f} ms.\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "avatar.md").write_text(md)
    (out_dir / "avatar.json").write_text(json.dumps(rows, indent=1))
    return md
