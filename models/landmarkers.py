"""Landmarkers behind one small interface: (image, face boxes) -> per-face landmarks.

    hih        our HIH network (models/engine.py), 68 points, sub-pixel, per-point confidence
    mediapipe  MediaPipe Face Mesh, 478 points: the competitor baseline
Adding one is one class with `scheme`, `num_points` and `__call__`.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from models.detector import FaceBox
from models.eyes import Eyes
from models.shape import load_shape_model


@dataclass
class LandmarkResult:
    landmarks_px: np.ndarray   # (K,2) float32, image px, sub-pixel
    confidence: np.ndarray     # (K,) float32 in [0,1]
    box: FaceBox               # the box the landmarks were computed from


class HIHLandmarker:
    scheme = "300w-68"
    num_points = 68

    # backend: onnxruntime on CPU by default: in the running pipeline it measured 11-12 ms per face
    # against 24-25 ms for torch (torch's OpenMP threads suffer most from the other stages' load)
    def __init__(self, weights: str | Path | None = None, device: str = "auto", precision: str = "fp32",
                 threads: int = 0, streams: int = 2, backend: str = "onnxruntime", decode: str | None = None,
                 views: int = 0):
        from models.engine import LandmarkEngine, auto_threads
        threads = threads or auto_threads()
        self.engine = LandmarkEngine(weights, device, precision, streams=streams, threads=threads,
                                     backend=backend, decode=decode, views=views)
        self.num_points = self.engine.num_points
        self.weights_path = self.engine.weights_path
        # an onnxruntime session takes calls from several threads at once (the pipeline's look-ahead)
        self.concurrent_calls = self.engine.device == "cpu" and backend == "onnxruntime"
        self._eyes = None            # loaded on first use: models.eyes.EyeLocator, or False without weights

    def __call__(self, image_bgr: np.ndarray, boxes: list[FaceBox]) -> list[LandmarkResult | None]:
        if not boxes:
            return []
        pts, conf = self.engine.landmarks(image_bgr, self.matrices(boxes))
        return [LandmarkResult(p, c, b) for p, c, b in zip(pts, conf, boxes)]

    def matrices(self, boxes: list[FaceBox]) -> np.ndarray:
        return self.engine.crop_matrices(np.stack([b.center_px for b in boxes]), np.array([b.side_px for b in boxes]))

    @property
    def recorded_points(self) -> int:
        """Points per face in a recording: the 68, then the two pupils (68, 69) when the eye network ships."""
        from models.eyes import WEIGHTS
        return self.num_points + 2 if WEIGHTS.is_file() else self.num_points

    def eyes(self, image_bgr: np.ndarray, landmarks_px: list[np.ndarray]) -> list[Eyes] | None:
        """Pupils and eye outlines per face from the eye network (models.eyes), or None without its weights."""
        if self._eyes is None:
            from models.eyes import WEIGHTS, EyeLocator
            self._eyes = EyeLocator(WEIGHTS) if WEIGHTS.is_file() else False
        return self._eyes(image_bgr, landmarks_px) if self._eyes else None

    def close(self) -> None:
        pass


@dataclass
class _Request:
    image_bgr: np.ndarray
    matrices: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None
    error: BaseException | None = None


class BatchingLandmarker:
    """One HIH engine shared by many threads (one per video in `extract --batch-videos`): the calls
    that arrive together are served as one network batch (dynamic batching), so a GPU gets hundreds
    of faces per launch, with their crops made on the device, instead of one frame's faces.

    `in_flight` batches are on the device at once (default: 2 on CUDA, 1 on a CPU): while one
    computes on the engine's stream ring, the callers not waiting for it gather the next, which is
    uploaded as the first one computes."""

    def __init__(self, landmarker: HIHLandmarker, max_faces: int = 512, wait_ms: float = 2.0, in_flight: int | None = None):
        self.landmarker, self.engine = landmarker, landmarker.engine
        self.scheme, self.num_points, self.weights_path = landmarker.scheme, landmarker.num_points, landmarker.weights_path
        self.max_faces, self.wait_s = max_faces, wait_ms / 1000
        self.in_flight = in_flight or (2 if self.engine.device.startswith("cuda") else 1)
        self.batch_sizes: deque[int] = deque(maxlen=10_000)   # faces per recent network batch (bounded: long runs)
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._server = threading.Thread(target=self._serve, name="landmark-batcher", daemon=True)
        self._server.start()

    def __call__(self, image_bgr: np.ndarray, boxes: list[FaceBox]) -> list[LandmarkResult | None]:
        if not boxes:
            return []
        req = _Request(image_bgr, self.landmarker.matrices(boxes))
        self._requests.put(req)
        req.done.wait()
        if req.error is not None:
            raise req.error
        pts, conf = req.result
        return [LandmarkResult(p, c, b) for p, c, b in zip(pts, conf, boxes)]

    @property
    def recorded_points(self) -> int:
        return self.landmarker.recorded_points

    def eyes(self, image_bgr: np.ndarray, landmarks_px: list[np.ndarray]) -> list[Eyes] | None:
        return self.landmarker.eyes(image_bgr, landmarks_px)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """The first request and whatever else arrives within wait_ms (up to max_faces); and whether
        close() was called meanwhile."""
        batch, faces = [first], len(first.matrices)
        deadline = time.perf_counter() + self.wait_s
        while faces < self.max_faces:
            try:
                req = self._requests.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if req is None:
                return batch, True
            batch.append(req)
            faces += len(req.matrices)
        return batch, False

    def _serve(self) -> None:
        flying: deque[tuple[list[_Request], object]] = deque()     # batches handed to the engine, oldest first
        while True:
            try:   # with batches in flight, wait only briefly: their callers cannot send more
                first = self._requests.get(timeout=self.wait_s if flying else None)
            except queue.Empty:
                self._finish(*flying.popleft())
                continue
            closing = first is None
            if not closing:
                batch, closing = self._gather(first)
                try:
                    flying.append((batch, self.engine.submit_many([(r.image_bgr, r.matrices) for r in batch])))
                    self.batch_sizes.append(sum(len(r.matrices) for r in batch))
                except Exception as e:   # handed to every caller of this batch, raised in their own thread
                    self._fail(batch, e)
            while flying and (closing or len(flying) >= self.in_flight):
                self._finish(*flying.popleft())
            if closing:
                return

    def _finish(self, batch: list[_Request], pending) -> None:
        try:
            results = self.engine.collect_many(pending)
        except Exception as e:
            self._fail(batch, e)
            return
        for r, res in zip(batch, results):
            r.result = res
            r.done.set()

    @staticmethod
    def _fail(batch: list[_Request], error: Exception) -> None:
        for r in batch:
            r.error = error
            r.done.set()

    def close(self) -> None:
        self._requests.put(None)
        self._server.join()


class MediaPipeLandmarker:
    """Face Mesh run on a square crop around each box (2x the landmark square, 256 px), so it gets
    the same face region as ours; static mode, one face per crop."""

    scheme = "mediapipe-478"
    num_points = 478
    crop_scale = 2.0
    crop_px = 256

    def __init__(self, **_):
        import mediapipe as mp
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                     refine_landmarks=True, min_detection_confidence=0.3)
        self.weights_path = None

    def __call__(self, image_bgr: np.ndarray, boxes: list[FaceBox]) -> list[LandmarkResult | None]:
        from models import crop
        out = []
        for b in boxes:
            m = crop.similarity(b.center_px, b.side_px * self.crop_scale, self.crop_px)
            patch = crop.warp(image_bgr, m, self.crop_px)
            res = self._mesh.process(cv2.cvtColor(patch, cv2.COLOR_BGR2RGB))
            if not res.multi_face_landmarks:
                out.append(None)
                continue
            lm = res.multi_face_landmarks[0].landmark
            # normalised [0,1] of the crop's edges -> crop pixel centres -> image px
            pts = np.array([[p.x, p.y] for p in lm], np.float64) * self.crop_px - 0.5
            img_pts = crop.transform_points(crop.invert(m), pts).astype(np.float32)
            # Face Mesh gives one face presence score, no per-point confidence
            out.append(LandmarkResult(img_pts, np.ones(len(img_pts), np.float32), b))
        return out

    def eyes(self, image_bgr: np.ndarray, landmarks_px: list[np.ndarray]) -> list[Eyes]:
        """The refined mesh's iris centres: 468 (the eye drawn by iBUG 36-41), then 473; its eye outline is
        among the 68 points already."""
        return [Eyes(lm[[468, 473]]) for lm in landmarks_px]

    def close(self) -> None:
        self._mesh.close()


def box_change(a: FaceBox, b: FaceBox) -> float:
    """How far box b is from box a: the larger of the centre shift and the size change, in a's sides."""
    moved = float(np.abs(b.center_px - a.center_px).max()) / a.side_px
    return max(moved, abs(b.side_px / a.side_px - 1))


def crop_box(landmarks_px: np.ndarray, score: float = 1.0) -> FaceBox:
    """The crop box a face's landmarks ask for next: the square around the nearest plausible face
    (models.shape.ShapeModel.plausible) when they are the model's 68 points, else around the points.

    Taken from the raw points, a few wild ones on a hard face (a jaw pulled along its contour, an
    occluded brow) grow or shrink the next crop, which makes them wilder, pass after pass; the
    plausible face keeps the box where the face is (bench/RESULTS.md, "The next crop comes from a
    plausible face")."""
    shape = load_shape_model()
    pts = np.asarray(landmarks_px, np.float64)
    return FaceBox.from_landmarks(shape.plausible(pts) if len(pts) == shape.num_points else pts, score)


def settle(landmarker, image_bgr: np.ndarray, results: list[LandmarkResult | None], passes: int = 3,
           tolerance: float = 0.01) -> list[LandmarkResult | None]:
    """Re-crop from the landmarks until the box settles: at most `passes` more runs, stopping for a
    face once its landmark box moves less than `tolerance` (fraction of the face side).

    A detector's box is centred and sized differently from the landmark-extent square the
    landmarker was trained on (off by a quarter of the face on turned faces); a tracked face's box
    comes from its last landmarks. This gives a first frame or a photo the crop of a tracked face.
    """
    results = list(results)
    todo = [i for i, r in enumerate(results) if r is not None]
    for _ in range(passes):
        boxes = {i: crop_box(results[i].landmarks_px, results[i].box.score) for i in todo}
        todo = [i for i in todo if box_change(results[i].box, boxes[i]) > tolerance]
        if not todo:
            break
        for i, r in zip(todo, landmarker(image_bgr, [boxes[i] for i in todo])):
            if r is not None:
                results[i] = r
    return results


LANDMARKERS = {"hih": HIHLandmarker, "mediapipe": MediaPipeLandmarker}


def build_landmarker(name: str, **kwargs):
    if name not in LANDMARKERS:
        raise ValueError(f"unknown landmarker {name!r}; choose one of {sorted(LANDMARKERS)}")
    return LANDMARKERS[name](**kwargs)
