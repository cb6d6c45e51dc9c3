"""`run.py extract`: a folder of videos in, one complete recording per good input out, resumable,
in worker processes or through a Ray cluster."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from stream.demo import DemoSource
from stream.recorders import load_recording
from tests.test_pipeline import write_video

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def extract(*args, timeout=600, **popen):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    cmd = [sys.executable, str(ROOT / "run.py"), "extract", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three demo clips of different lengths and one corrupt file."""
    folder = tmp_path_factory.mktemp("videos")
    for i, n in enumerate((20, 25, 30)):
        demo = DemoSource(frames=n, seed=i)
        write_video(folder / f"clip{i}.mp4", [demo.render(k) for k in range(n)])
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(3000))
    return folder


def _frames_in(path: Path) -> int:
    return len(load_recording(path)["frame"])


def test_extract_a_folder_reports_the_corrupt_file_and_resumes(videos, tmp_path):
    out = tmp_path / "out"
    r = extract(videos, "--out", out, "--workers", "2")
    assert r.returncode == 1, r.stdout + r.stderr            # one input failed: the exit code says so
    assert "Traceback" not in r.stderr
    assert "broken.mp4" in r.stdout and "error:" in r.stdout and "3 extracted" in r.stdout and "1 failed" in r.stdout
    for i, n in enumerate((20, 25, 30)):
        assert _frames_in(out / f"clip{i}.csv") == n          # a row for every frame
        assert (out / f"clip{i}.csv.meta.json").is_file()
    assert not (out / "broken.csv").exists() and not (out / ".partial").exists()
    again = extract(videos, "--out", out, "--workers", "1", "--format", "csv")
    assert "3 skipped" in again.stdout and "0 extracted" in again.stdout
    assert again.returncode == 1                              # the corrupt one is still reported


def test_a_killed_run_leaves_nothing_that_looks_finished(tmp_path):
    demo = DemoSource(frames=240)
    src = tmp_path / "long.mp4"
    write_video(src, [demo.render(k) for k in range(240)])
    out = tmp_path / "out"
    proc = extract(src, "--out", out, "--workers", "1", "--format", "jsonl", start_new_session=True)
    partial = out / ".partial" / "long.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (partial.is_file() and partial.stat().st_size > 20_000):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert partial.is_file(), "the run should have been writing when it was killed"
    assert not (out / "long.jsonl").exists()                  # nothing with the final name
    r = extract(src, "--out", out, "--workers", "1", "--format", "jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _frames_in(out / "long.jsonl") == 240


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ray", path=str(Path(sys.executable).parent)) is None, reason="ray is not installed")
def test_extract_through_a_local_ray_cluster(videos, tmp_path):
    """CI's cluster: a head with 2 CPUs started as a user would (`ray start --head`), then --ray auto."""
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")     # short: Ray's socket paths must fit 107 bytes
    started = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                              f"--temp-dir={temp}"], capture_output=True, text=True, timeout=180, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        out = tmp_path / "out"
        r = extract(videos / "clip0.mp4", videos / "clip1.mp4", videos / "broken.mp4", "--out", out, "--ray", "auto")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "2 extracted" in r.stdout and "1 failed" in r.stdout
        assert _frames_in(out / "clip0.csv") == 20 and _frames_in(out / "clip1.csv") == 25
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_batched_videos_give_the_recordings_one_at_a_time_gives(videos, tmp_path):
    """--batch-videos (the GPU path: several inputs tracked at once, their faces in shared network
    batches) writes, per input, the landmarks the one-input-at-a-time run writes; the corrupt input
    is still reported on its own."""
    import numpy as np
    alone, batched = tmp_path / "alone", tmp_path / "batched"
    assert extract(videos, "--out", alone, "--workers", "1", "--batch-videos", "0").returncode == 1
    r = extract(videos, "--out", batched, "--batch-videos", "3")
    assert r.returncode == 1 and "3 extracted" in r.stdout and "1 failed" in r.stdout, r.stdout + r.stderr
    assert "batched through one network" in r.stderr and "Traceback" not in r.stderr
    for i in range(3):
        a, b = load_recording(alone / f"clip{i}.csv"), load_recording(batched / f"clip{i}.csv")
        assert np.array_equal(a["frame"], b["frame"])
        assert np.nanmax(np.abs(a["landmarks"] - b["landmarks"])) < 0.05     # px: the same network, batched


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batching_landmarker_serves_many_threads_in_shared_batches(in_flight):
    """Threads calling one BatchingLandmarker at once get their own faces' landmarks (as a direct call
    gives them), served in batches of several callers, with one batch or two on the engine at a time
    (two: the CUDA default, where the next batch uploads while one computes); an engine error reaches
    every caller."""
    import threading

    import numpy as np
    import skimage.data

    from models.detector import FaceBox
    from models.landmarkers import BatchingLandmarker, build_landmarker
    img = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    base = build_landmarker("hih", backend="torch")
    boxes = [FaceBox(np.array([230.0 + d, 120.0]), 150.0) for d in range(8)]
    want = [base(img, [b])[0].landmarks_px for b in boxes]
    batcher = BatchingLandmarker(base, wait_ms=50, in_flight=in_flight)
    got = [None] * len(boxes)

    def call(i):
        got[i] = batcher(img, [boxes[i]])[0].landmarks_px
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(boxes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.abs(g - w).max() < 0.05 for g, w in zip(got, want))
    assert max(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == len(boxes)
    with pytest.raises(RuntimeError):
        batcher(np.zeros((4, 4), np.uint8), boxes[:1])        # a grey 2-D image fails inside the engine
    batcher.close()
