"""Reliability: bad media, hard faces, misbehaving sources, a long soak. Never a hang or a crash."""
import resource
import socket
import threading
import time

import av
import cv2
import numpy as np
import pytest

from models.detector import FaceBox, build_detector
from models.landmarkers import build_landmarker
from stream.demo import DemoSource, load_photo
from stream.pipeline import Pipeline, PipelineConfig
from stream.sources import AvSource, FolderSource, Source, SourceError, open_source
from stream.tracking import Tracker

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def hih():
    return build_landmarker("hih")


class ListSource(Source):
    def __init__(self, images, live=False):
        self.images, self.live = images, live
        self.fps, self.description = 30.0, "list"

    def frames(self):
        for i, img in enumerate(self.images):
            yield img, i / 30.0


def run_frames(images, landmarker, live=False):
    pipe = Pipeline(ListSource(images, live), Tracker(build_detector("blazeface")), landmarker)
    with pipe:
        return list(pipe.results())


def _demo_video(path, n=30, pix_fmt="yuv420p", codec="libx264"):
    demo = DemoSource(frames=n)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=30)
        s.width, s.height, s.pix_fmt = 640, 480, pix_fmt
        for img, _ in demo.frames():
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format=pix_fmt)):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


# ---- bad media ---------------------------------------------------------------------------------

def test_truncated_video_keeps_what_decodes_or_says_why(tmp_path):
    path = tmp_path / "full.mp4"
    _demo_video(path, 60)
    half = tmp_path / "half.mp4"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        assert len(list(AvSource(str(half)).frames())) < 60
    except SourceError as e:
        assert "half.mp4" in str(e)


def test_corrupt_bytes_in_the_middle(tmp_path):
    path = tmp_path / "c.mp4"
    _demo_video(path, 60)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    data[mid:mid + 5000] = rng.integers(0, 255, 5000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    try:
        frames = list(AvSource(str(path)).frames())
        assert 0 < len(frames) <= 60
    except SourceError:
        pass   # a clear error is also fine; a hang or a crash is not


def test_ten_bit_video(tmp_path, hih):
    path = tmp_path / "10bit.mp4"
    try:
        _demo_video(path, 10, pix_fmt="yuv420p10le")
    except (av.FFmpegError, ValueError) as e:
        pytest.skip(f"this PyAV build cannot encode 10-bit H.264 ({e})")
    frames = list(AvSource(str(path)).frames())
    assert len(frames) == 10 and frames[0][0].dtype == np.uint8 and frames[0][0].shape == (480, 640, 3)
    out = run_frames([f for f, _ in frames], hih)
    assert sum(bool(f.faces) for f in out) >= 8


@pytest.mark.parametrize("shape", [(1, 1, 3), (3000, 4000, 3), (479, 641, 3), (2, 3000, 3)])
def test_odd_resolutions(shape, hih):
    img = np.full(shape, 90, np.uint8)
    out = run_frames([img] * 3, hih)
    assert len(out) == 3 and all(not f.faces for f in out)


def test_grayscale_and_rgba_frames_from_a_folder(tmp_path, hih):
    face = DemoSource(frames=1).render(0)
    cv2.imwrite(str(tmp_path / "a_gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "b_rgba.png"), cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "c_16bit.png"), face.astype(np.uint16) * 257)
    (tmp_path / "d_broken.png").write_bytes(b"\x89PNG broken")
    src = FolderSource(str(tmp_path))
    frames = list(src.frames())
    assert len(frames) == 3 and all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f, _ in frames)
    out = run_frames([f for f, _ in frames], hih)
    assert all(len(f.faces) == 1 for f in out)


# ---- faces -------------------------------------------------------------------------------------

def test_no_face(hih):
    out = run_frames([np.full((480, 640, 3), v, np.uint8) for v in (0, 128, 255)] * 5, hih)
    assert all(not f.faces for f in out)


def test_face_at_the_border_and_extreme_brightness(hih):
    photo = load_photo("astronaut")
    frames = []
    for dx, gain in ((-120, 1.0), (-120, 1.0), (0, 0.25), (0, 0.25), (0, 2.5), (0, 2.5)):
        m = np.float32([[1, 0, dx], [0, 1, 0]])
        img = cv2.warpAffine(photo, m, (640, 480))
        frames.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    out = run_frames(frames, hih)
    assert len(out) == 6
    for f in out:
        for face in f.faces:
            assert np.isfinite(face.smoothed_px).all()


def test_tiny_face_does_not_crash(hih):
    frame = DemoSource(frames=1, face_px=20).render(0)
    out = run_frames([frame] * 5, hih)
    assert len(out) == 5   # found or not, the run goes on


def test_ten_faces(hih):
    photo = load_photo("astronaut")[40:220, 150:300]
    tile = cv2.resize(photo, (128, 154))
    frame = np.full((480, 640, 3), 60, np.uint8)
    for i in range(10):
        r, c = divmod(i, 5)
        frame[20 + r * 230:20 + r * 230 + 154, c * 128:(c + 1) * 128] = tile
    det = build_detector("blazeface")
    found = len(det(frame))
    out = run_frames([frame] * 12, hih)
    assert max(len(f.faces) for f in out) >= min(found, 10) - 1 >= 5
    ids = {face.track_id for f in out for face in f.faces}
    assert len(ids) <= 12   # tracks persist instead of being recreated every detection


def test_face_lost_and_found_gets_a_new_id(hih):
    demo = DemoSource(frames=40)
    blank = np.full((480, 640, 3), 60, np.uint8)
    frames = [demo.render(i) for i in range(12)] + [blank] * 6 + [demo.render(i) for i in range(12, 24)]
    out = run_frames(frames, hih)
    first = {face.track_id for f in out[:12] for face in f.faces}
    gone = [f for f in out[12:18]]
    later = {face.track_id for f in out[20:] for face in f.faces}
    assert len(first) == 1 and all(not f.faces for f in gone[1:]) and len(later) == 1
    assert later != first          # policy: a face found again gets a new id


# ---- sources -----------------------------------------------------------------------------------

def test_stalled_network_stream_times_out_with_a_clear_message():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: conns.append(server.accept()), daemon=True).start()   # accept, never send
    t = time.time()
    with pytest.raises(SourceError, match="cannot open"):
        AvSource(f"tcp://127.0.0.1:{port}", timeout_s=2.0)
    assert time.time() - t < 20
    server.close()


def test_unsupported_and_missing_sources():
    with pytest.raises(SourceError, match="unsupported URL"):
        open_source("gopher://x")
    with pytest.raises(SourceError, match="not found"):
        open_source("/no/such/file.mp4")


class Endless(Source):
    """A camera much faster than inference, for a long time."""

    live = True
    description = "endless"

    def __init__(self, n):
        self.n = n
        self.img = np.zeros((120, 160, 3), np.uint8)

    def frames(self):
        for i in range(self.n):
            yield self.img.copy(), float(i)


class InstantLandmarker:
    scheme, num_points = "test-68", 68

    def __call__(self, image, boxes):
        from models.landmarkers import LandmarkResult
        rng = np.random.default_rng(0)
        return [LandmarkResult((b.center_px + rng.uniform(-20, 20, (68, 2))).astype(np.float32), np.ones(68, np.float32), b)
                for b in boxes]


class OneBox:
    def __call__(self, image):
        return [FaceBox(np.array([80.0, 60.0]), 40.0)]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.slow
def test_soak_10000_frames_memory_bounded():
    """10 000 frames through the whole pipeline (fast stand-in landmarker so it takes seconds):
    RSS growth stays under 30 MB (measured: a few MB)."""
    warm = Pipeline(Endless(500), Tracker(OneBox()), InstantLandmarker(), PipelineConfig(drop_frames=False))
    with warm:
        list(warm.results())
    before = _rss_mb()
    pipe = Pipeline(Endless(10_000), Tracker(OneBox()), InstantLandmarker(), PipelineConfig(drop_frames=False))
    n = 0
    with pipe:
        for _ in pipe.results():
            n += 1
    growth = _rss_mb() - before
    print(f"soak: {n} frames, RSS growth {growth:.1f} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    assert n == 10_000 and growth < 30


def test_fast_live_source_memory_and_drops():
    pipe = Pipeline(Endless(3000), Tracker(OneBox()), InstantLandmarker())
    before = _rss_mb()
    with pipe:
        out = sum(1 for _ in pipe.results())
    assert pipe.stats.dropped > 0 and out + pipe.stats.dropped == 3000
    assert _rss_mb() - before < 50
