"""Pipeline: drop policy, ordering/timestamps, detection on the demo clip, end-to-end tracking,
a real video file written with PyAV, and recordings that load back."""
import threading
import time

import av
import numpy as np
import pytest

from models.detector import FaceBox, build_detector
from stream.demo import DemoSource
from stream.pipeline import LatestSlot, Pipeline, PipelineConfig
from stream.recorders import Recorder, RecordMeta, load_recording
from stream.sources import AvSource, Source, open_source
from stream.tracking import Tracker


class SlowLandmarker:
    """Stands in for a landmarker slower than the camera: a fixed box-centred 'face'."""

    scheme, num_points = "test-4", 4

    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s

    def __call__(self, image, boxes):
        time.sleep(self.delay_s)
        from models.landmarkers import LandmarkResult
        return [LandmarkResult(np.array([b.center_px + d for d in ([-10, -10], [10, -10], [10, 10], [-10, 10])],
                                        np.float32), np.ones(4, np.float32), b) for b in boxes]


class FixedDetector:
    def __call__(self, image):
        return [FaceBox(np.array([320.0, 240.0]), 100.0)]


class FastSource(Source):
    """A 'camera' producing frames far faster than inference."""

    live = True
    description = "fast"

    def __init__(self, n):
        self.n = n

    def frames(self):
        for i in range(self.n):
            time.sleep(0.001)
            yield np.zeros((480, 640, 3), np.uint8), float(i)


def test_latest_slot_drops_old_items():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == 4 and slot.dropped == 4


def test_live_source_drops_frames_when_inference_is_slow():
    pipe = Pipeline(FastSource(300), Tracker(FixedDetector()), SlowLandmarker(0.02), PipelineConfig(smoothing="none"))
    with pipe:
        frames = list(pipe.results())
    assert pipe.stats.dropped > 100            # most frames were dropped, not queued
    assert len(frames) + pipe.stats.dropped <= 300
    idx = [f.index for f in frames]
    assert idx == sorted(idx)                   # in order
    ts = [f.timestamp_s for f in frames]
    assert ts == sorted(ts)


def test_file_source_keeps_every_frame_in_order():
    src = DemoSource(frames=40)
    pipe = Pipeline(src, Tracker(FixedDetector()), SlowLandmarker(0.005), PipelineConfig(smoothing="kalman"))
    with pipe:
        frames = list(pipe.results())
    assert [f.index for f in frames] == list(range(40))
    assert np.allclose([f.timestamp_s for f in frames], np.arange(40) / 30.0)
    assert all({"detect", "landmarks", "smooth"} <= set(f.timings_ms) for f in frames)
    assert all(f.faces[0].track_id == 0 for f in frames)   # one stable track


def test_the_shipped_demo_clip_holds_the_rendered_frames():
    """The default clip plays from its shipped encoding (cheaper to decode than to render); it must be
    the frames render() makes, to within video coding (`hihtrack export --shipped` remakes it)."""
    from stream.demo import SHIPPED_CLIP, SHIPPED_CLIP_FRAMES
    demo = DemoSource(frames=SHIPPED_CLIP_FRAMES)
    assert demo.clip == SHIPPED_CLIP
    frames = list(demo.frames())
    assert len(frames) == SHIPPED_CLIP_FRAMES
    assert np.allclose([t for _, t in frames], np.arange(SHIPPED_CLIP_FRAMES) / 30)
    for i in range(0, SHIPPED_CLIP_FRAMES, 37):
        gap = np.abs(frames[i][0].astype(np.int16) - demo.render(i)).mean()
        assert gap < 5, (i, gap)              # H.264 at crf 23: about 3 grey levels
    assert len(list(DemoSource(frames=10).frames())) == 10
    assert DemoSource(frames=SHIPPED_CLIP_FRAMES + 1).clip is None and DemoSource(faces=2).clip is None   # rendered


def test_a_paced_demo_decodes_each_frame_when_it_is_due_as_a_camera_delivers_it():
    """Paced, the clip's next frame is decoded only once it is due, not while the frame before it is
    being processed: a camera's capture thread waits for the camera between frames."""
    demo = DemoSource(frames=6, fps=50.0, realtime=True)
    decoded_s: list[float] = []
    shipped = demo.images

    def images():
        for image in shipped():
            decoded_s.append(time.perf_counter())
            yield image

    demo.images = images
    frames = demo.frames()
    start = time.perf_counter()
    for i, (_, ts) in enumerate(frames):
        assert len(decoded_s) == i + 1           # nothing decoded ahead of the frame handed over
        assert decoded_s[i] - start >= ts - 0.002
        time.sleep(0.005)                         # the consumer's work on this frame
    assert len(decoded_s) == 6


def test_fake_camera_clip_loops_there_and_back_with_a_counter_per_frame(tmp_path):
    """The browser's fake camera loops its file: played there and back, the face never jumps at the
    loop, and each frame's stamp reads back as its place in the file (glass-to-glass latency)."""
    from stream.demo import FRAME_SIZE, STAMP_BITS, STAMP_PX, write_y4m
    w, h = FRAME_SIZE
    path = tmp_path / "clip.y4m"
    source = DemoSource(frames=6)
    assert write_y4m(path, source, stamp=True, there_and_back=True) == 10
    raw = path.read_bytes().split(b"FRAME\n")[1:]
    luma = [np.frombuffer(f, np.uint8)[:w * h].reshape(h, w) for f in raw]
    assert len(luma) == 10

    def counter(y: np.ndarray) -> int:
        x0, y0 = w - (STAMP_BITS + 1) * STAMP_PX, h - 2 * STAMP_PX
        bits = [y[y0 + STAMP_PX // 2, x0 + b * STAMP_PX + STAMP_PX // 2] > 128 for b in range(STAMP_BITS)]
        return int("".join("1" if b else "0" for b in bits), 2)

    assert [counter(y) for y in luma] == list(range(10))
    unstamped = lambda y: y[: h - 2 * STAMP_PX].astype(np.int16)    # noqa: E731
    order = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]          # the loop goes on 1 -> 0: one step, like every other
    for k, i in enumerate(order):
        assert np.abs(unstamped(luma[k]) - unstamped(luma[i])).mean() < 0.01, (k, i)
    assert np.abs(unstamped(luma[1]) - unstamped(luma[0])).mean() > 0.5     # the frames do differ


def test_detector_finds_the_face_in_the_demo_clip():
    src = DemoSource(frames=60)
    det = build_detector("blazeface")
    for i in range(0, 60, 10):
        boxes = det(src.render(i))
        c, side = src.true_boxes(i)[0]
        assert len(boxes) == 1
        assert np.linalg.norm(boxes[0].center_px - c) < 0.15 * side
        assert 0.8 < boxes[0].side_px / side < 1.25


@pytest.mark.parametrize("landmarker", ["mediapipe", "hih"])
def test_end_to_end_demo_tracks_the_face(landmarker):
    from models.landmarkers import build_landmarker
    src = DemoSource(frames=60)
    lm = build_landmarker(landmarker)
    pipe = Pipeline(src, Tracker(build_detector("blazeface")), lm)
    with pipe:
        frames = list(pipe.results())
    assert len(frames) == 60
    for f in frames:
        assert len(f.faces) == 1, f.index
        c, side = src.true_boxes(f.index)[0]
        pts = f.faces[0].smoothed_px
        centre = (pts.min(0) + pts.max(0)) / 2
        assert np.linalg.norm(centre - c) < 0.15 * side, (f.index, centre, c)
        assert f.faces[0].pose is not None


def write_video(path, frames, fps=25):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_real_video_file_through_pyav(tmp_path):
    demo = DemoSource(frames=30)
    path = tmp_path / "clip.mp4"
    write_video(path, [demo.render(i) for i in range(30)])
    src = open_source(str(path))
    assert isinstance(src, AvSource) and abs(src.fps - 25) < 0.01
    from models.landmarkers import build_landmarker
    pipe = Pipeline(src, Tracker(build_detector("blazeface")), build_landmarker("hih"))
    with pipe:
        frames = list(pipe.results())
    assert len(frames) == 30
    assert np.allclose([f.timestamp_s for f in frames], np.arange(30) / 25, atol=1e-3)  # the file's own clock
    assert all(len(f.faces) == 1 for f in frames)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".npz"])
def test_recording_round_trip(tmp_path, ext):
    src = DemoSource(frames=20)
    pipe = Pipeline(src, Tracker(FixedDetector()), SlowLandmarker())
    meta = RecordMeta("test-4", 4, "test", None, src.description, 30.0)
    rec = Recorder(tmp_path / f"r{ext}", meta)
    faces = []
    with pipe:
        for f in pipe.results():
            rec.write(f)
            faces.append((f.faces[0].landmarks_px, f.faces[0].smoothed_px))
    rec.close()
    data = load_recording(tmp_path / f"r{ext}")
    assert data["landmarks"].shape == (20, 1, 4, 2)
    assert np.allclose(data["landmarks"][:, 0], [a for a, _ in faces], atol=1e-3)
    assert np.allclose(data["smoothed"][:, 0], [b for _, b in faces], atol=1e-3)
    assert np.allclose(data["timestamp"], np.arange(20) / 30, atol=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        Recorder(tmp_path / f"r{ext}", meta)


def test_stage_exception_ends_the_run_with_the_error():
    class Broken(Source):
        live = True

        def frames(self):
            yield np.zeros((48, 64, 3), np.uint8), 0.0
            raise RuntimeError("camera unplugged")

    pipe = Pipeline(Broken(), Tracker(FixedDetector()), SlowLandmarker())
    with pytest.raises(RuntimeError, match="unplugged"):
        with pipe:
            list(pipe.results())
    assert not any(t.is_alive() for t in threading.enumerate() if t.name in ("_capture", "_detect", "_landmarks", "_smooth"))


def test_two_faces_keep_stable_track_ids():
    from models.landmarkers import build_landmarker
    src = DemoSource(frames=45, faces=2)
    pipe = Pipeline(src, Tracker(build_detector("blazeface")), build_landmarker("hih"))
    with pipe:
        frames = list(pipe.results())
    ids = [sorted(f.track_id for f in fr.faces) for fr in frames]
    assert all(i == ids[0] for i in ids) and len(ids[0]) == 2, ids[:3]
    # each id stays on the same face (left / right half of the frame)
    side = {f.track_id: f.smoothed_px[:, 0].mean() < 320 for f in frames[0].faces}
    assert sorted(side.values()) == [False, True]
    for fr in frames:
        for face in fr.faces:
            assert (face.smoothed_px[:, 0].mean() < 320) == side[face.track_id]


def test_demo_with_three_faces_shows_three_separate_faces():
    """demo:N means N fully visible faces: the tracker finds all of them, each near its true box."""
    from models.landmarkers import build_landmarker
    src = DemoSource(frames=30, faces=3)
    with Pipeline(src, Tracker(build_detector("blazeface")), build_landmarker("hih")) as pipe:
        frames = list(pipe.results())
    assert sum(len(f.faces) == 3 for f in frames) >= 0.9 * len(frames)
    for f in frames[::5]:
        truth = src.true_boxes(f.index)
        for face in f.faces:
            centre = face.landmarks_px.mean(0)
            c, side = min(truth, key=lambda t: np.linalg.norm(t[0] - centre))
            assert np.linalg.norm(c - centre) < 0.25 * side


def test_a_file_source_tracks_the_same_way_every_time():
    """Frames kept one by one are boxed from exactly the previous frame's landmarks: two runs over the
    same clip give identical landmarks (a live source boxes ahead instead and may differ)."""
    from models.landmarkers import build_landmarker
    lm = build_landmarker("hih")
    runs = []
    for _ in range(2):
        with Pipeline(DemoSource(frames=40), Tracker(build_detector("blazeface")), lm) as pipe:
            runs.append(np.stack([f.faces[0].landmarks_px for f in pipe.results()]))
    assert runs[0].shape == (40, 68, 2) and np.array_equal(runs[0], runs[1])


def test_the_look_ahead_gives_the_landmarks_of_a_one_at_a_time_run():
    """A file's next frame, run ahead on this frame's boxes, is used only when its boxes turn out to be
    exactly those: with and without the look-ahead the same clip gives identical landmarks and ids."""
    from models.landmarkers import build_landmarker
    lm = build_landmarker("hih")
    assert lm.concurrent_calls
    runs, used = [], []
    for concurrent in (True, False):
        lm.concurrent_calls = concurrent
        with Pipeline(DemoSource(frames=60, faces=2), Tracker(build_detector("blazeface")), lm) as pipe:
            frames = list(pipe.results())
        runs.append([[(f.track_id, f.landmarks_px) for f in fr.faces] for fr in frames])
        used.append(pipe.look_ahead_used)
    lm.concurrent_calls = True
    assert used[1] == 0 and 10 < used[0] < 60, used          # used on some frames, not on all
    assert len(runs[0]) == len(runs[1]) == 60
    for a, b in zip(*runs):
        assert [tid for tid, _ in a] == [tid for tid, _ in b]
        assert all(np.array_equal(pa, pb) for (_, pa), (_, pb) in zip(a, b))


def test_the_short_gil_handover_lasts_while_pipelines_run_and_the_hosts_own_comes_back():
    import sys

    from stream.pipeline import GIL_SWITCH_S
    host_s = sys.getswitchinterval()
    make = lambda: Pipeline(DemoSource(frames=5), Tracker(FixedDetector()), SlowLandmarker(), PipelineConfig(smoothing="none"))  # noqa: E731
    a, b = make(), make()
    a.start()
    b.start()
    assert sys.getswitchinterval() == pytest.approx(min(host_s, GIL_SWITCH_S))
    a.stop()
    a.stop()                                            # a second stop gives nothing back twice
    assert sys.getswitchinterval() == pytest.approx(min(host_s, GIL_SWITCH_S))   # b still runs
    b.stop()
    assert sys.getswitchinterval() == pytest.approx(host_s)


def test_stage_costs_times_every_step_of_a_tracked_face():
    """`bench pipeline`'s per-step table: every step of tracking the demo clip's face is timed, the
    landmark call's own work with the network's answer already there (not as a difference of medians)."""
    from bench.pipeline import stage_costs
    costs = stage_costs("hih", reps=5)
    assert {"landmark network", "crop, views, back to image px", "eyes: pupils and outline (eye crops and network)",
            "whole frame, steps in a row (FaceTracker.process)"} <= set(costs)
    assert all(np.isfinite(v) and v > 0 for v in costs.values()), costs
