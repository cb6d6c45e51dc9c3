"""The threaded pipeline: capture -> boxes + landmarks -> smooth -> consumer (UI, sinks).

Stages are threads joined by bounded queues. Capture never waits for inference: a live source
writes into a one-frame slot that keeps only the newest frame (drops are counted); a file source
hands over every frame (blocking) unless it is paced in real time, in which case it drops too.
The landmark stage makes each frame's boxes itself, from the landmarks of exactly the previous
frame (detecting only every `detect_every` frames): a file is then tracked deterministically, and
a live frame is taken from the slot only when the model is free, so it is the newest one (a
separate detect stage running ahead held frames in a queue: 178 ms capture-to-output on WebRTC).
One shutdown path for every ending: the source ends or fails, the consumer stops, or an exception
in a stage; the end marker flows through every stage so the consumer sees every processed frame.

Look-ahead (files): a tracked face's crop box stays put until its landmarks move more than
`box_hysteresis`, so the next frame's boxes are often this frame's. When the next frame is already
queued and the tracker expects that (Tracker.boxes_likely_kept), a landmarker that takes concurrent
calls runs it on this frame's boxes in a helper thread while this frame's own landmarks run; the next
frame uses that result only if its boxes turn out to be exactly those, and runs its own call
otherwise. The landmarks are then the ones a one-at-a-time run gives, frame for frame, with two
network calls on two cores.
"""
from __future__ import annotations

import copy
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from models.eyes import with_eye_outline
from models.landmarkers import settle
from models.schemes import to_68
from stream.expressions import CalibrationError, CalibrationProfile, ExpressionEstimator
from stream.frames import Face, Frame, HeadPose
from stream.pose import estimate_pose
from stream.smoothing import build_smoother
from stream.sources import Source, SourceError
from stream.tracking import Tracker

_END = object()


class LatestSlot:
    """A one-item mailbox: put() replaces an unread item (counting the drop), get() blocks.
    The end marker never displaces an unread item: get() returns that item first, then the end."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._has = False
        self._ended = False
        self.dropped = 0

    def put(self, item) -> int:
        with self._cond:
            if item is _END:
                self._ended = True
                self._cond.notify()
                return 0
            dropped = int(self._has)
            self.dropped += dropped
            self._item, self._has = item, True
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._has or self._ended, timeout):
                raise queue.Empty
            if not self._has:
                return _END
            self._has = False
            return self._item


class PeekQueue(queue.Queue):
    """A queue whose next item can be looked at without taking it (the landmark stage's look-ahead)."""

    def peek(self):
        """The next item, or None when the queue is empty."""
        with self.mutex:
            return self.queue[0] if self.queue else None


class LookAhead:
    """The landmarks of a queued frame computed on the current frame's boxes, in a helper thread."""

    def __init__(self, pool: ThreadPoolExecutor, landmarker, frame: Frame, track_ids: list[int], boxes: list):
        self.frame, self.track_ids, self.boxes = frame, list(track_ids), list(boxes)
        self.future: Future = pool.submit(landmarker, frame.image, self.boxes)

    def results_for(self, frame: Frame) -> list | None:
        """The results, when `frame` is the frame looked at and its boxes are the ones it ran on; else
        None (the caller computes them), and the helper's run is cancelled if it has not started."""
        # the tracker hands out a track's box object itself and replaces it when the box moves:
        # the same objects are the same boxes
        if frame is self.frame and not frame.new_tracks and frame.box_tracks == self.track_ids \
                and all(a is b for a, b in zip(frame.boxes, self.boxes)):
            return self.future.result()
        self.future.cancel()
        return None


@dataclass
class PipelineConfig:
    smoothing: str = "shape"
    smoothing_settings: object = None   # the smoother's config dataclass, a dict of its keys, or None for defaults
    queue_size: int = 2               # frames handed on between stages
    # a file's frames waiting for the landmark stage: the look-ahead needs the next one there when it asks
    # (2 -> 4 on a 640x480 file: 137 -> 166 of 300 frames run ahead and used, 127 -> 141 FPS)
    file_queue_size: int = 4
    drop_frames: bool | None = None   # None: drop when the source is live or paced
    calibration: str | None = None    # expression calibration profile: loaded if it exists, saved on calibrate


# The GIL hand-over interval while a pipeline runs. The networks run with the GIL released; when one
# returns, its thread waits for the GIL until the thread holding it (smoothing, expressions: Python)
# is told to let go, by default after 5 ms. Beside a thread running Python the landmark network then
# took 12.0 ms a call instead of 5.7; at 0.2 ms it took 6.8, and a file ran at 109 FPS instead of 89.
GIL_SWITCH_S = 0.0002


class _GilHandover:
    """GIL_SWITCH_S while any pipeline runs, and the host program's own interval again once the last
    one stops: a library must not change its host's interpreter for good."""
    _lock = threading.Lock()
    _running = 0
    _saved_s = 0.0

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._running == 0:
                cls._saved_s = sys.getswitchinterval()
                sys.setswitchinterval(min(cls._saved_s, GIL_SWITCH_S))
            cls._running += 1

    @classmethod
    def leave(cls) -> None:
        with cls._lock:
            cls._running -= 1
            if cls._running == 0:
                sys.setswitchinterval(cls._saved_s)


STATS_WINDOW = 3000   # frames the percentiles cover (100 s at 30 fps): memory stays flat on a long stream


@dataclass
class Stats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    stage_ms: dict[str, deque] = field(default_factory=dict)
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    started: float = field(default_factory=time.perf_counter)

    def record(self, frame: Frame) -> None:
        self.frames_out += 1
        for k, v in frame.timings_ms.items():
            self.stage_ms.setdefault(k, deque(maxlen=STATS_WINDOW)).append(v)
        self.latency_ms.append(frame.latency_ms())

    def fps(self) -> float:
        return self.frames_out / max(time.perf_counter() - self.started, 1e-9)

    def summary(self) -> dict:
        pct = lambda v, q: float(np.percentile(v, q)) if v else float("nan")  # noqa: E731
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "fps": self.fps(), "latency_p50_ms": pct(self.latency_ms, 50),
                "latency_p95_ms": pct(self.latency_ms, 95), "latency_p99_ms": pct(self.latency_ms, 99),
                "stage_p50_ms": {k: pct(v, 50) for k, v in self.stage_ms.items()}}


class FrameProcessor:
    """The work done on one frame, step by step: boxes -> landmarks -> smoothing (+ pose, expressions).
    The threaded Pipeline runs each step in its own stage; FaceTracker.process runs them in a row."""

    def __init__(self, tracker: Tracker, landmarker, cfg: PipelineConfig, stills: bool = False):
        self.tracker, self.landmarker, self.cfg, self.stills = tracker, landmarker, cfg, stills
        self.smoothing_enabled = True
        self.calibrate_requested = False        # set by a UI ('c' key / button): next frame is the neutral face
        self._smoothers: dict[int, object] = {}
        self._expressions: dict[int, ExpressionEstimator] = {}
        self._poses: dict[int, HeadPose] = {}      # last smoothed pose per track: the next raw pose's start
        self._new_smoothing: tuple | None = None
        path = Path(cfg.calibration) if cfg.calibration else None
        if path is not None and not path.parent.is_dir():
            raise CalibrationError(f"cannot keep the calibration profile {path}: folder {path.parent} does not exist")
        self._profile = CalibrationProfile.load(path) if path is not None and path.exists() else CalibrationProfile()

    def set_smoothing(self, name: str, settings=None) -> None:
        """Change the filter of a running stream from its next frame on; tracks, ids and calibration stay."""
        self._new_smoothing = (name, settings)

    def __call__(self, frame: Frame) -> Frame:
        self.boxes(frame)
        self.landmarks(frame)
        self.smooth(frame)
        return frame

    def boxes(self, frame: Frame) -> None:
        if self.stills:
            frame.box_tracks, frame.boxes, frame.new_tracks = self.tracker.detect_only(frame.image)
        else:
            frame.box_tracks, frame.boxes, frame.new_tracks = self.tracker.boxes(frame.image, frame.index)

    def landmarks(self, frame: Frame, results: list | None = None) -> None:
        """`results`: this frame's landmarks on its boxes when they are already computed (LookAhead)."""
        if results is None:
            results = self.landmarker(frame.image, frame.boxes)
        new = [i for i, tid in enumerate(frame.box_tracks) if tid in frame.new_tracks]
        if new:  # faces that start from a detector box: re-crop from their landmarks first
            cfg = self.tracker.cfg
            refined = settle(self.landmarker, frame.image, [results[i] for i in new], cfg.refine_passes, cfg.refine_tolerance)
            for i, r in zip(new, refined):
                results[i] = r
        if self.stills:
            alive = {tid for tid, res in zip(frame.box_tracks, results) if self.tracker.confident(res)}
        else:
            self.tracker.update(frame.box_tracks, results)
            alive = self.tracker.tracks
        for tid, res in zip(frame.box_tracks, results):
            # only tracks still alive after this update produce faces: this drops the ones lost now
            if res is not None and tid in alive:
                frame.faces.append(Face(tid, res.box, res.landmarks_px, res.confidence, self.landmarker.scheme,
                                        detected=tid in frame.new_tracks))

    def smooth(self, frame: Frame) -> None:
        # filters and expression state belong to this stage alone: drop those of ended tracks
        live = {f.track_id for f in frame.faces}
        for tid in list(self._smoothers):
            if tid not in live and tid not in self.tracker.tracks:
                del self._smoothers[tid]
                self._expressions.pop(tid, None)
                self._poses.pop(tid, None)
        calibrate, self.calibrate_requested = self.calibrate_requested, False
        if self._new_smoothing is not None:
            (self.cfg.smoothing, self.cfg.smoothing_settings), self._new_smoothing = self._new_smoothing, None
            self._smoothers.clear()
        h, w = frame.image.shape[:2]
        for face in frame.faces:
            sm = self._smoothers.get(face.track_id)
            if sm is None or face.detected:
                sm = self._smoothers[face.track_id] = build_smoother(self.cfg.smoothing, self.cfg.smoothing_settings)
            smoothed = sm.update(face.landmarks_px, face.confidence, frame.timestamp_s, face.box.side_px)
            face.smoothed_px = smoothed.astype(np.float32) if self.smoothing_enabled else face.landmarks_px
            # a tracked head moves little between frames: last frame's pose starts the fit (one solve
            # instead of two); a face that starts from the detector gets a fresh EPnP start
            face.pose = estimate_pose(face.landmarks_px, (w, h), near=None if face.detected else self._poses.get(face.track_id))
            face.pose_smoothed = estimate_pose(face.smoothed_px, (w, h), near=face.pose)
            if face.pose_smoothed is not None:
                self._poses[face.track_id] = face.pose_smoothed
        self._locate_eyes(frame)
        for face in frame.faces:
            if face.pose_smoothed is not None:   # a scheme with the 68 iBUG points (directly or mapped)
                est = self._expressions.get(face.track_id)
                if est is None:
                    est = self._expressions[face.track_id] = ExpressionEstimator(copy.deepcopy(self._profile))
                pts68 = with_eye_outline(to_68(face.smoothed_px), face.eye_outline_px)
                yaw = float(face.pose_smoothed.rotation_deg[0])
                if calibrate:
                    est.calibrate(pts68, yaw, face.pupils_px)
                    self._save_calibration(est)
                face.expressions = est.blendshapes(pts68, yaw, face.pupils_px)

    def _save_calibration(self, est: ExpressionEstimator) -> None:
        """The calibrated face becomes every new face's start, and the user's profile file when one is named."""
        self._profile = copy.deepcopy(est.profile)
        if self.cfg.calibration:
            try:
                self._profile.save(self.cfg.calibration)
            except OSError as e:        # tracking goes on with the calibration in memory
                print(f"warning: cannot save the calibration to {self.cfg.calibration} ({e.strerror})", file=sys.stderr)

    def _locate_eyes(self, frame: Frame) -> None:
        """Pupils and eye outlines of every face, from the eye regions the smoothed landmarks outline."""
        find = getattr(self.landmarker, "eyes", None)
        if find is None or not frame.faces:
            return
        found = find(frame.image, [f.smoothed_px for f in frame.faces])
        for face, eyes in zip(frame.faces, found or []):
            face.pupils_px = np.asarray(eyes.pupils_px, np.float32)
            face.eye_outline_px = eyes.outline_px


class Pipeline:
    def __init__(self, source: Source, tracker: Tracker, landmarker, cfg: PipelineConfig | None = None):
        self.source, self.tracker, self.landmarker = source, tracker, landmarker
        self.cfg = cfg or PipelineConfig()
        drop = self.cfg.drop_frames
        self.drop = (source.live or getattr(source, "realtime", False)) if drop is None else drop
        self.stills = getattr(source, "stills", False)   # unrelated photos: each detected on its own
        self.slot = LatestSlot() if self.drop else PeekQueue(self.cfg.file_queue_size)
        self.q_faces: queue.Queue = queue.Queue(self.cfg.queue_size)
        self.q_out: queue.Queue = queue.Queue(self.cfg.queue_size)
        self.stop_event = threading.Event()
        self.stats = Stats()
        self.error: BaseException | None = None
        self._fast_gil = False      # this pipeline holds the short GIL hand-over (_GilHandover)
        self.work = FrameProcessor(tracker, landmarker, self.cfg, self.stills)
        # a file's next frame is looked ahead at when the landmarker takes concurrent calls (module doc)
        look_ahead = not self.drop and not self.stills and getattr(landmarker, "concurrent_calls", False)
        self._ahead_pool = ThreadPoolExecutor(2, thread_name_prefix="landmarks-ahead") if look_ahead else None
        self._ahead: LookAhead | None = None
        self.look_ahead_runs = self.look_ahead_used = 0   # next frames run ahead; those whose result was used
        stages = {"_capture": self._capture}
        # when frames are dropped (live), smoothing runs in the landmark stage's thread: one hand-over
        # less per frame (latency), where a separate stage would only add throughput the camera cannot use
        if self.drop:
            stages["_landmarks"] = lambda: self._stage("landmarks", self.slot, self.q_out, self._landmarks_and_smooth)
        else:
            stages["_landmarks"] = lambda: self._stage("landmarks", self.slot, self.q_faces, self._landmarks)
            stages["_smooth"] = lambda: self._stage("smooth", self.q_faces, self.q_out, self.work.smooth)
        self._threads = [threading.Thread(target=self._guard, args=(fn,), name=name, daemon=True)
                         for name, fn in stages.items()]

    # ---- plumbing ---------------------------------------------------------------------------
    def _guard(self, stage) -> None:
        try:
            stage()
        except BaseException as e:  # noqa: BLE001 - surfaced to the consumer as one message
            if self.error is None:
                self.error = e
            self.stop_event.set()
            for q in (self.slot, self.q_faces, self.q_out):
                self._put(q, _END, force=True)

    def _put(self, q, item, force: bool = False) -> bool:
        """Blocking put that gives up when the pipeline stops."""
        if isinstance(q, LatestSlot):
            q.put(item)
            return True
        while True:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.stop_event.is_set():
                    if force:
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            pass
                        continue
                    return False

    def _get(self, q):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop_event.is_set():
                    return _END

    # ---- stages -----------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            for i, (image, ts) in enumerate(self.source.frames()):
                if self.stop_event.is_set():
                    break
                frame = Frame(i, ts, image)
                self.stats.frames_in += 1
                if isinstance(self.slot, LatestSlot):
                    self.stats.dropped += self.slot.put(frame)
                elif not self._put(self.slot, frame):
                    break
        finally:
            self._put(self.slot, _END, force=True)

    def _stage(self, name: str, inq, outq, work) -> None:
        """One pipeline stage: take frames in order, do `work(frame)`, time it, pass it on; forward the end.
        A step that `work` times itself (under another name) is not counted twice."""
        while (frame := self._get(inq)) is not _END:
            t = time.perf_counter()
            before = dict(frame.timings_ms)
            work(frame)
            inner = sum(v for k, v in frame.timings_ms.items() if before.get(k) != v)
            frame.timings_ms[name] = (time.perf_counter() - t) * 1000 - inner
            if not self._put(outq, frame):
                return
        self._put(outq, _END, force=True)

    def _landmarks(self, frame: Frame) -> None:
        t = time.perf_counter()
        self.work.boxes(frame)
        frame.timings_ms["detect"] = (time.perf_counter() - t) * 1000
        ahead, self._ahead = self._ahead, None
        # the next frame starts before this one's result is waited for, so the two calls overlap
        if self._ahead_pool is not None and not frame.new_tracks and self.tracker.boxes_likely_kept():
            nxt = self.slot.peek()
            if isinstance(nxt, Frame):
                self._ahead = LookAhead(self._ahead_pool, self.landmarker, nxt, frame.box_tracks, frame.boxes)
                self.look_ahead_runs += 1
        results = ahead.results_for(frame) if ahead is not None else None
        self.look_ahead_used += results is not None
        self.work.landmarks(frame, results)

    def _landmarks_and_smooth(self, frame: Frame) -> None:
        self._landmarks(frame)
        t = time.perf_counter()
        self.work.smooth(frame)
        frame.timings_ms["smooth"] = (time.perf_counter() - t) * 1000

    # ---- consumer API -----------------------------------------------------------------------
    def start(self) -> "Pipeline":
        if not self._fast_gil:
            _GilHandover.enter()
            self._fast_gil = True
        self.stats.started = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def results(self) -> Iterator[Frame]:
        """Processed frames in order, until the input ends or stop() is called."""
        while (frame := self._get(self.q_out)) is not _END:
            self.stats.record(frame)
            yield frame
        if self.error is not None and not isinstance(self.error, (KeyboardInterrupt,)):
            raise self.error

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=True, cancel_futures=True)
        self.tracker.wait()
        self.source.close()
        if self._fast_gil:
            _GilHandover.leave()
            self._fast_gil = False

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["FrameProcessor", "Pipeline", "PipelineConfig", "LatestSlot", "LookAhead", "PeekQueue", "Stats", "SourceError"]
