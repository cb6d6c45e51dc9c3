"""Avatar/AR outputs and recordings: VMC/UDP/WebSocket receivers on loopback, expressions,
crash-safe files, replay, annotated video."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from models.data import load_faces
from stream.expressions import ExpressionEstimator
from stream.recorders import load_recording

ROOT = Path(__file__).resolve().parents[1]


def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _track(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "track", "--source", "demo", "--ui", "none", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.e2e
def test_receivers_get_well_formed_packets_paced_by_the_source(tmp_path):
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer
    from websockets.sync.client import connect

    osc_port, udp_port, ws_port = _free_port(), _free_port(), _free_port(socket.SOCK_STREAM)
    got = {"blend": [], "bone": [], "apply": 0, "udp": [], "ws": []}
    disp = Dispatcher()
    disp.map("/VMC/Ext/Blend/Val", lambda addr, name, value: got["blend"].append((name, value)))
    disp.map("/VMC/Ext/Blend/Apply", lambda addr, *a: got.__setitem__("apply", got["apply"] + 1))
    disp.map("/VMC/Ext/Bone/Pos", lambda addr, *a: got["bone"].append(a))
    osc = ThreadingOSCUDPServer(("127.0.0.1", osc_port), disp)
    threading.Thread(target=osc.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", udp_port))
    udp.settimeout(0.5)

    def udp_loop():
        while True:
            try:
                got["udp"].append((time.monotonic(), json.loads(udp.recv(1 << 20))))
            except (socket.timeout, OSError):
                if done.is_set():
                    return

    def ws_loop():
        for _ in range(200):
            try:
                with connect(f"ws://127.0.0.1:{ws_port}") as ws:
                    while not done.is_set():
                        try:
                            got["ws"].append(json.loads(ws.recv(timeout=0.5)))
                        except TimeoutError:
                            continue
                    return
            except OSError:
                time.sleep(0.1)

    done = threading.Event()
    threads = [threading.Thread(target=udp_loop, daemon=True), threading.Thread(target=ws_loop, daemon=True)]
    for t in threads:
        t.start()
    r = _track("--max-frames", "90", "--realtime", "--send", f"osc://127.0.0.1:{osc_port}",
               "--send", f"udp://127.0.0.1:{udp_port}", "--send", f"ws://127.0.0.1:{ws_port}")
    done.set()
    for t in threads:
        t.join(timeout=5)
    osc.shutdown()
    assert r.returncode == 0, r.stderr
    names = {n for n, _ in got["blend"]}
    assert {"Blink", "Blink_L", "Blink_R", "A", "I", "U", "E", "O", "Joy"} <= names     # VRM presets by default
    assert all(0.0 <= v <= 1.0 for _, v in got["blend"])
    assert got["apply"] > 60 and len(got["bone"]) > 60
    head = [b for b in got["bone"] if b[0] == "Head"][-1]
    assert abs(np.linalg.norm(head[4:8]) - 1) < 1e-3                     # a unit quaternion
    assert {"LeftEye", "RightEye"} <= {b[0] for b in got["bone"]}        # the eyes follow the pupils
    packets = [p for _, p in got["udp"]]
    assert len(packets) > 60
    p = packets[-1]
    assert p["faces"] and len(p["faces"][0]["landmarks"]) == 68 and "yaw" in p["faces"][0]["pose"]
    times = [t for t, _ in got["udp"]]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate < 40, rate          # paced by the 30 fps source, never faster (a busy machine may send fewer)
    assert len(got["ws"]) > 30 and got["ws"][-1]["faces"][0]["id"] == p["faces"][0]["id"]


def test_expressions_follow_the_mouth_and_ignore_head_motion(data_300w):
    pts = load_faces(data_300w, "test")[0].landmarks_px.astype(np.float64)
    est = ExpressionEstimator()
    est.calibrate(pts)
    base = est.blendshapes(pts)
    assert base["jawOpen"] < 0.05 and base["eyeBlinkLeft"] < 0.05
    opened = pts.copy()
    io = np.linalg.norm(pts[36] - pts[45])
    opened[[56, 57, 58, 65, 66, 67, 5, 6, 7, 8, 9, 10, 11]] += [0, 0.3 * io]   # lower lip and chin drop
    assert est.blendshapes(opened)["jawOpen"] > 0.4
    closed = pts.copy()
    for a, b in ((37, 41), (38, 40), (43, 47), (44, 46)):                        # lids meet
        mid = (pts[a] + pts[b]) / 2
        closed[a] = closed[b] = mid
    blink = est.blendshapes(closed)
    assert blink["eyeBlinkLeft"] > 0.9 and blink["eyeBlinkRight"] > 0.9
    # the same face moved, scaled and rolled: values stay put
    a = np.radians(20)
    rot = 1.7 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = est.blendshapes(pts @ rot.T + [130.0, -40.0])
    for k, v in base.items():
        assert abs(moved[k] - v) < 1e-6, k


@pytest.mark.reliability
def test_killed_process_leaves_a_loadable_recording(tmp_path):
    out = tmp_path / "crash.csv"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "track", "--source", "demo", "--ui", "none",
                             "--demo-frames", "100000", "--realtime", "--record", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 20000):
        time.sleep(0.5)
    time.sleep(2.5)             # let at least one more periodic flush happen
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = load_recording(out)
    assert len(data["frame"]) > 20
    assert np.isfinite(data["landmarks"][:, 0]).all()


def test_ctrl_c_closes_files_cleanly(tmp_path):
    out = tmp_path / "int.npz"
    # Ctrl-C as in a terminal: a test run launched in the background (`pytest &`) has SIGINT ignored,
    # which every child inherits, so the tracker would never see the signal
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "track", "--source", "demo", "--ui", "none",
                             "--demo-frames", "100000", "--realtime", "--record", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(15)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "recorded" in stdout
    data = load_recording(out)
    assert len(data["frame"]) > 10 and data["landmarks"].shape[2:] == (70, 2)   # 68 points and 2 pupils


@pytest.mark.e2e
def test_record_video_and_replay(tmp_path):
    csv, mp4 = tmp_path / "t.csv", tmp_path / "t.mp4"
    r = _track("--max-frames", "40", "--record", str(csv), "--record-video", str(mp4))
    assert r.returncode == 0, r.stderr
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
        assert len(frames) == 40 and abs(float(s.average_rate) - 30) < 0.5
        assert abs(frames[-1].time - 39 / 30) < 0.01       # the source's own timestamps
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "replay", str(csv), "--ui", "none"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0 and "replayed 40 frames" in r.stdout, r.stderr


def test_ar_glasses_land_on_the_eyes(data_300w):
    import cv2

    from stream.draw import draw_glasses
    face = load_faces(data_300w, "test")[3]
    img = cv2.imread(str(face.image_path))
    out = img.copy()
    draw_glasses(out, face.landmarks_px)
    changed = np.abs(out.astype(int) - img.astype(int)).sum(-1) > 30
    ys, xs = np.nonzero(changed)
    eyes = face.landmarks_px[36:48]
    assert changed.sum() > 200
    # the changed region is centred on the eyes and spans about the eye line
    assert abs(xs.mean() - eyes[:, 0].mean()) < 0.15 * np.ptp(eyes[:, 0])
    assert abs(ys.mean() - eyes[:, 1].mean()) < 0.5 * np.ptp(eyes[:, 0])
    assert not changed[int(face.landmarks_px[8, 1]) - 2:, :].any()   # nothing drawn below the chin


def test_busy_port_is_one_clear_line():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.listen(1)
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "--ui", "gradio", "--port", str(port)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    sock.close()
    assert r.returncode == 2 and "already in use" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_record_video_passes_audio_through(tmp_path):
    from stream.demo import DemoSource
    src_path, out = tmp_path / "with_audio.mp4", tmp_path / "annotated.mp4"
    demo = DemoSource(frames=30)
    with av.open(str(src_path), "w") as c:
        v = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=30)
        v.width, v.height, v.pix_fmt = 640, 480, "yuv420p"
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        for img, _ in demo.frames():
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        t = np.arange(44100) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for i in range(0, 44100, 1024):
            f = av.AudioFrame.from_ndarray(tone[:, i:i + 1024], format="flt", layout="mono")
            f.sample_rate, f.pts = 44100, i
            for p in a.encode(f):
                c.mux(p)
        for s in (v, a):
            for p in s.encode():
                c.mux(p)
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "track", "--source", str(src_path), "--ui", "none",
                        "--record-video", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        n_audio = sum(1 for _ in c.demux(c.streams.audio[0]))
    assert n_audio > 20
