"""The CLI as a user meets it: the documented run works; bad input gets one clear line, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.e2e
def test_track_demo_mediapipe_prints_fps_and_latency():
    r = run("track", "--source", "demo", "--ui", "none", "--landmarker", "mediapipe", "--max-frames", "60")
    assert r.returncode == 0, r.stderr
    assert "60 frames" in r.stdout and "FPS" in r.stdout and "latency p50" in r.stdout
    assert "landmarks" in r.stdout  # per-stage times


@pytest.mark.e2e
def test_default_run_falls_back_to_demo_and_no_window(tmp_path):
    r = run("--max-frames", "20", "--record", str(tmp_path / "t.csv"))
    assert r.returncode == 0, r.stderr
    assert "demo clip" in r.stderr and "no display" in r.stderr
    assert "recorded 20 rows" in r.stdout


def _assert_clear_error(r, *words):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(err) == 1, r.stderr
    for w in words:
        assert w in err[0], err[0]


@pytest.mark.parametrize("args,words", [
    (["--source", "7", "--ui", "none"], ["camera 7"]),
    (["--source", "/nope/clip.mp4", "--ui", "none"], ["not found"]),
    (["--source", "ftp://example.com/x", "--ui", "none"], ["unsupported URL"]),
    (["--ui", "fancy"], ["ui", "fancy"]),
    (["--landmarker", "magic", "--ui", "none"], ["landmarker"]),
    (["--device", "tpu", "--ui", "none"], ["device"]),
    (["--smoothing", "heavy", "--ui", "none"], ["smoothing"]),
    (["--source", "demo", "--ui", "opencv"], ["no display", "--ui"]),
    (["--source", "demo", "--ui", "none", "--weights", "/nope/w.pt"], ["not found"]),
    (["--config", "/nope.yaml"], ["config file"]),
    (["--max-frames", "-3", "--ui", "none"], ["max-frames"]),
])
def test_bad_input_is_one_clear_line(args, words):
    _assert_clear_error(run(*args, timeout=120), *words)


@pytest.mark.reliability
def test_bad_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    (tmp_path / "bad.yaml").write_text("source: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "w.pt").write_bytes(b"\x00" * 100)
    _assert_clear_error(run("--source", str(tmp_path / "empty.mp4"), "--ui", "none"), "empty")
    _assert_clear_error(run("--source", str(tmp_path / "text.mp4"), "--ui", "none"), "cannot open")
    _assert_clear_error(run("--config", str(tmp_path / "bad.yaml")), "not valid YAML")
    _assert_clear_error(run("--config", str(tmp_path / "list.yaml")), "mapping")
    _assert_clear_error(run("--source", "demo", "--ui", "none", "--weights", str(tmp_path / "w.pt")), "cannot read weights")
    empty_dir = tmp_path / "imgs"
    empty_dir.mkdir()
    _assert_clear_error(run("--source", str(empty_dir), "--ui", "none"), "no images")


@pytest.mark.reliability
def test_existing_recording_is_not_overwritten(tmp_path):
    out = tmp_path / "t.csv"
    out.write_text("precious\n")
    _assert_clear_error(run("--source", "demo", "--ui", "none", "--max-frames", "5", "--record", str(out)), "already exists")
    assert out.read_text() == "precious\n"


@pytest.mark.e2e
def test_eval_reports_the_user_path_and_the_ground_truth_box(tmp_path):
    data = ROOT.parent / "shared/data/300w"
    if not data.is_dir():
        pytest.skip("300-W not found")
    r = run("eval", "--data", str(data), "--limit", "12", "--competitors", "", "--decodes", "hih", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "detector protocol" in r.stdout and "gt-box protocol" in r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("| hihtrack (hih decode)")]
    assert len(rows) == 2
    for row in rows:
        nme, faces = float(row.split("|")[2]), row.split("|")[7].strip()        # NME, inner, jaw, FR, AUC, faces
        assert nme < 6 and faces == "12/12", row


@pytest.mark.e2e
def test_single_photo_source(tmp_path):
    import cv2
    import skimage.data
    cv2.imwrite(str(tmp_path / "astronaut.png"), skimage.data.astronaut()[:, :, ::-1])
    r = run("track", "--source", str(tmp_path / "astronaut.png"), "--ui", "none", "--record", str(tmp_path / "a.csv"))
    assert r.returncode == 0, r.stderr
    assert "stills" in r.stderr and "recorded 1 rows" in r.stdout
    assert open(tmp_path / "a.csv").read().splitlines()[1].split(",")[4] == "1"     # success


@pytest.mark.e2e
def test_tracking_on_the_cpu_default_backend_needs_no_torch(tmp_path):
    """The shipped weights' ONNX graphs ship with them, so tracking a photo on onnxruntime imports
    neither torch nor filterpy, from the first run on a fresh machine. Other weights are exported
    once (with torch) into the user's cache, and later runs use that."""
    import shutil

    import cv2
    import skimage.data

    from models.engine import SHIPPED_WEIGHTS
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), skimage.data.astronaut()[:, :, ::-1])
    mine = tmp_path / "mine.pt"
    shutil.copy(SHIPPED_WEIGHTS["fast"], mine)
    code = ("import sys; from hihtrack.cli import main; rc = main(['track', '--source', sys.argv[1], '--ui', 'none', "
            "'--device', 'cpu', '--record', sys.argv[2], '--overwrite', *sys.argv[3:]]); "
            "print('loaded:', sorted(m for m in ('torch', 'filterpy') if m in sys.modules)); sys.exit(rc)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run_track(*extra):
        r = subprocess.run([sys.executable, "-c", code, str(photo), str(tmp_path / "t.csv"), *extra], capture_output=True,
                           text=True, timeout=300, env=env, cwd=ROOT)
        assert r.returncode == 0 and "recorded 1 rows" in r.stdout, r.stderr
        return r.stdout
    cache = tmp_path / "cache" / "hihtrack" / "onnx"
    assert "loaded: []" in run_track()
    assert not cache.exists() or not list(cache.glob("*.onnx"))       # the shipped graphs served
    assert "loaded: ['torch']" in run_track("--weights", str(mine))   # exported once ...
    assert len(list(cache.glob("mine-*.onnx"))) == 1
    assert "loaded: []" in run_track("--weights", str(mine))          # ... and cached
