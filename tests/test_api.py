"""The public Python API (hihtrack) and the examples built on it."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hihtrack import FaceTracker, InputError, SettingsError, load_settings
from stream.demo import DemoSource

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(smoothing="shape") as t:
        yield t


def test_track_yields_faces_with_everything_a_user_reads(tracker):
    frames = list(tracker.track("demo", max_frames=12))
    assert [f.index for f in frames] == list(range(12))
    face = frames[-1].faces[0]
    assert face.landmarks.shape == (68, 2) and face.landmarks_px.shape == (68, 2)
    assert face.smoothed_px is not None and np.isfinite(face.landmarks).all()
    assert face.scheme == "300w-68" and face.confidence.shape == (68,)
    assert face.pose is not None and face.expressions and "jawOpen" in face.expressions
    assert {f.faces[0].track_id for f in frames} == {0}
    assert tracker.last_summary.frames == 12


def test_running_modes_image_video_live(tracker):
    """image: each image a photo; video: frames of one video, tracked (one id), timestamps increasing;
    live: process_async returns at once and the results reach the callback, newest frame first."""
    import threading
    import time
    demo = DemoSource(frames=5)
    photo = tracker.process(demo.render(0))
    assert len(photo.faces) == 1 and photo.faces[0].detected
    (center_px, side_px), = demo.true_boxes(0)
    assert np.abs(photo.faces[0].landmarks_px.mean(0) - center_px).max() < 0.15 * side_px
    with pytest.raises(InputError, match="image mode"):
        tracker.process(demo.render(0), timestamp_s=0.0)
    with FaceTracker(tracker.settings, running_mode="video", landmarker=tracker.landmarker) as video:
        ids = [video.process(demo.render(i), timestamp_s=i / 30).faces[0].track_id for i in range(5)]
        assert len(set(ids)) == 1                      # one track across frames
        with pytest.raises(InputError, match="larger than the previous"):
            video.process(demo.render(0), timestamp_s=0.0)
        with pytest.raises(InputError, match="timestamp_s"):
            video.process(demo.render(0))
    results, gate, images = [], threading.Event(), [demo.render(i) for i in range(5)]

    def on_result(frame):          # the first result holds the tracker's thread until the gate opens
        results.append(frame)
        gate.wait(60)

    with FaceTracker(tracker.settings, running_mode="live", result_callback=on_result, landmarker=tracker.landmarker) as live:
        with pytest.raises(InputError, match="live mode"):
            live.process(demo.render(0))
        live.process_async(demo.render(0), timestamp_s=0.0)
        while not results:
            time.sleep(0.01)
        for i in range(1, 5):       # the tracker is held: each call still returns at once (else this hangs)
            live.process_async(images[i], timestamp_s=i / 30)
        gate.set()
        while results[-1].timestamp_s != 4 / 30:
            time.sleep(0.01)
        live.stop_live()
        assert all(len(f.faces) == 1 for f in results)
        assert [f.timestamp_s for f in results] == sorted(f.timestamp_s for f in results)
        assert live.stats.frames == len(results)
    with pytest.raises(InputError, match="result_callback"):
        FaceTracker(tracker.settings, running_mode="live", landmarker=tracker.landmarker)
    with pytest.raises(InputError, match="running_mode"):
        FaceTracker(tracker.settings, running_mode="stream", landmarker=tracker.landmarker)


def test_live_controls_through_the_facade(tracker):
    """Smoothing off and on, another filter and its knobs reach the tracker's processing through
    FaceTracker (frame by frame here, so each change lands on a known frame); a stream's stats and a
    drawn frame are read through it too."""
    from hihtrack import DrawOptions
    demo = DemoSource(frames=8)
    with FaceTracker(tracker.settings, running_mode="video", landmarker=tracker.landmarker) as video:
        video.process(demo.render(0), timestamp_s=0.0)
        video.smoothing_enabled = False
        off = video.process(demo.render(1), timestamp_s=1 / 30).faces[0]
        assert np.array_equal(off.smoothed_px, off.landmarks_px)           # off: smoothed = raw
        video.smoothing_enabled = True
        video.set_smoothing("one_euro", min_cutoff=0.5)
        assert video.settings.smoothing == "one_euro" and video.settings.one_euro.min_cutoff == 0.5
        on = [video.process(demo.render(i), timestamp_s=i / 30).faces[0] for i in range(2, 6)][-1]
        assert not np.array_equal(on.smoothed_px, on.landmarks_px)
        with pytest.raises(SettingsError, match="min_cutof"):
            video.set_smoothing("one_euro", min_cutof=1.0)
    frames = list(tracker.track("demo", max_frames=8))
    stats = tracker.stats
    assert stats.frames == 8 and stats.fps > 0 and np.isfinite(stats.latency_p50_ms)
    img = tracker.draw(frames[-1], DrawOptions(mesh=False, pose_axes=False, stats=False))
    assert img.shape == frames[-1].image.shape and not np.array_equal(img, frames[-1].image)


@pytest.mark.parametrize("bad", [None, "photo.jpg", np.zeros((0, 0, 3), np.uint8), np.zeros((4, 4, 5), np.uint8)])
def test_process_refuses_what_is_not_an_image(tracker, bad):
    with pytest.raises(InputError, match="expected an image"):
        tracker.process(bad)


def test_settings_are_checked_once_with_one_line():
    with pytest.raises(SettingsError, match="did you mean 'detect_every'"):
        FaceTracker(tracking={"detect_evry": 5})
    with pytest.raises(SettingsError, match="smoothing 'strong' is not one of"):
        load_settings(smoothing="strong")
    s = load_settings(**{"tracking.detect_every": 3, "kalman.process_noise": 1.0})
    assert s.tracking.detect_every == 3 and s.kalman.process_noise == 1.0 and s.tracking.max_faces == 10


def _example(name, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd="/")      # from anywhere: the example finds the repo itself


@pytest.mark.e2e
def test_example_print_landmarks():
    r = _example("print_landmarks.py", "--frames", "5")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("frame")]
    assert len(lines) == 5 and "nose (" in lines[0], r.stdout
    assert "demo clip" in r.stderr          # no webcam here: the fallback says so


@pytest.mark.e2e
def test_example_vmc_avatar_sends_packets():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        port = sock.getsockname()[1]
        r = _example("vmc_avatar.py", "--source", "demo", "--frames", "10", "--to", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr
        packets = []
        try:
            while True:
                packets.append(sock.recv(65536))
        except socket.timeout:
            pass
    assert "sent 10 frames" in r.stdout
    assert any(b"/VMC/Ext/Blend/Val" in p for p in packets) and any(b"/VMC/Ext/Bone/Pos" in p for p in packets)


@pytest.mark.e2e
def test_example_extract_folder(tmp_path):
    from tests.test_pipeline import write_video
    videos = tmp_path / "videos"
    videos.mkdir()
    demo = DemoSource(frames=15)
    write_video(videos / "a.mp4", [demo.render(i) for i in range(15)])
    r = _example("extract_folder.py", str(videos), str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "15 frames" in r.stdout and (tmp_path / "out" / "a.csv").is_file()
    again = _example("extract_folder.py", str(videos), str(tmp_path / "out"))
    assert "skipped" in again.stdout


def test_reconnect_gives_up_on_a_stream_that_opens_but_never_decodes(monkeypatch):
    """--reconnect on a URL that opens and then fails at once: a bounded number of tries, then one error."""
    import time

    from stream.sources import Source, SourceError

    class OpensButNeverDecodes(Source):
        live = True
        description = "rtsp://camera/never"

        def frames(self):
            raise SourceError("rtsp://camera/never stopped delivering frames")
            yield  # a generator (never reached)

    opened = []
    tracker = FaceTracker(reconnect=True, reconnect_attempts=2, landmarker="hih")
    monkeypatch.setattr(tracker, "open_source", lambda spec=None, notify=None: opened.append(spec) or OpensButNeverDecodes())
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        list(tracker.track("rtsp://camera/never"))
    assert len(opened) == 3          # the first open and 2 reconnects
    tracker.close()


def test_shipped_weights_by_name():
    """--weights small|fast name the shipped files; the fast ones find the same face as the default
    ones on a real photo, a few pixels apart at most."""
    from models.engine import SHIPPED_WEIGHTS, weights_path
    assert weights_path(None) == SHIPPED_WEIGHTS["fast"] and weights_path("small") == SHIPPED_WEIGHTS["small"]
    assert weights_path("runs/x/best.pt").name == "best.pt"
    photo = DemoSource(frames=1).render(0)
    small = FaceTracker(weights="small", ui="none").process(photo).faces
    fast = FaceTracker(weights="fast", ui="none").process(photo).faces
    assert len(small) == len(fast) == 1
    gap_px = np.linalg.norm(small[0].landmarks_px - fast[0].landmarks_px, axis=1)
    assert np.median(gap_px) < 0.05 * small[0].box.side_px, np.median(gap_px)


def test_automatic_choices_are_made_once_said_and_recorded(tmp_path):
    """Every "auto" is concrete after FaceTracker's one resolution step: the CLI prints the choices in one
    line and the recording's metadata keeps the values it was made with."""
    import json

    from hihtrack import resolve_auto
    settings, choices = resolve_auto(load_settings(device="auto", threads=0, crop_views=0))
    assert resolve_auto(load_settings(device="cpu", weights="small"))[0].weights == "small"
    assert resolve_auto(load_settings(device="cpu", landmarker="mediapipe"))[0].weights is None
    assert settings.device == "cpu" and settings.threads >= 1 and settings.crop_views == 1 and settings.weights == "fast"
    assert set(choices) == {"device", "threads", "crop_views", "weights"} and "no CUDA GPU" in choices["device"]
    rec = tmp_path / "t.csv"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "track", "--source", "demo", "--ui", "none", "--max-frames", "3",
                        "--record", str(rec)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("chosen automatically")]
    assert len(said) == 1 and "crop_views 1 (1 on a CPU)" in said[0], r.stderr
    meta = json.loads(Path(str(rec) + ".meta.json").read_text())
    assert meta["settings"]["crop_views"] == 1 and meta["settings"]["device"] == "cpu" and meta["settings"]["weights"] == "fast"
