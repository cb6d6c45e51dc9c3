"""Live browser sessions, shared by both web transports (WebRTC and Gradio's streaming images).

Each browser tab has one LiveSession, found by its session id: its own FaceTracker state (tracks,
filters, calibration), recording and latest annotated frame; the HIH network is shared by all.
A transport only pushes camera frames in and reads the newest finished frame out, so inference
never runs in a request or media callback: a slow model lowers the output rate, frames are dropped
(counted) rather than queued. Controls change the running session in place (no restart: ids and
filters survive a slider move). The registry is bounded and frees a session's pipeline, threads
and files when its tab closes.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from hihtrack import DrawOptions, FaceTracker, TrackSettings, UserError

DRAW_CHOICES = ["points", "indices", "mesh", "box", "pose axes", "AR glasses"]
DEFAULT_DRAW = ["points", "mesh", "box", "pose axes"]


class SessionLimit(UserError):
    """More live sessions than gradio.max_sessions."""


@dataclass
class Controls:
    """What the page's controls say."""
    landmarker: str = "hih"
    smoothing: str = "shape"
    strength: float = 0.25                       # 0 = responsive .. 1 = steady; 0.25 = the configured filter
    draw: list[str] = field(default_factory=lambda: list(DEFAULT_DRAW))

    def tracker_settings(self, base: TrackSettings) -> TrackSettings:
        """The strength slider mapped onto the chosen filter's own knob (log scale)."""
        s = replace(base, landmarker=self.landmarker, smoothing=self.smoothing)
        if self.smoothing == "kalman":
            s.kalman = replace(base.kalman, process_noise=float(10 ** (2 - 4 * self.strength)))        # 100 .. 0.01
        elif self.smoothing == "one_euro":
            s.one_euro = replace(base.one_euro, min_cutoff=float(10 ** (1 - 3 * self.strength)))       # 10 .. 0.01
        elif self.smoothing == "shape":
            s.shape = replace(base.shape, shape_min_cutoff=float(base.shape.shape_min_cutoff * 10 ** (4 * (0.25 - self.strength))))
        return s

    def draw_options(self) -> DrawOptions:
        d = set(self.draw)
        return DrawOptions(points="points" in d, indices="indices" in d, mesh="mesh" in d, box="box" in d,
                           pose_axes="pose axes" in d, glasses="AR glasses" in d)


class TrackerPool:
    """FaceTrackers kept for reuse: a tab or an upload borrows one and gives it back, so detector
    graphs and their buffers are built once per concurrent user, not once per tab or upload (memory
    grew ~10 MB per processed upload when each built its own)."""

    def __init__(self):
        self._free: dict[tuple[str, str], list[FaceTracker]] = {}
        self._lock = threading.Lock()

    def borrow(self, settings: TrackSettings, running_mode: str = "image", result_callback=None) -> FaceTracker:
        with self._lock:
            free = self._free.get((settings.landmarker, running_mode))
            tracker = free.pop() if free else None
        if tracker is None:                          # HIH weights: loaded once per process, shared
            return FaceTracker(settings, running_mode=running_mode, result_callback=result_callback)
        tracker.settings, tracker.result_callback = settings, result_callback   # state is per stream: nothing else carries over
        return tracker

    def give_back(self, tracker: FaceTracker) -> None:
        tracker.stop_live()
        with self._lock:
            self._free.setdefault((tracker.settings.landmarker, tracker.running_mode), []).append(tracker)

    def close(self) -> None:
        with self._lock:
            trackers = [t for free in self._free.values() for t in free]
            self._free.clear()
        for t in trackers:
            t.close()


class LiveSession:
    """One browser tab: its tracker in live mode (frames pushed, results drawn as they come), the newest
    drawn frame, stats, recording."""

    def __init__(self, base: TrackSettings, controls: Controls, files_dir: Path, pool: TrackerPool):
        self.base, self.controls, self.files_dir, self.pool = base, controls, files_dir, pool
        self.opts = controls.draw_options()
        self.latest_bgr: np.ndarray | None = None
        self.stats = "waiting for frames…"
        self.frames_out = 0
        self.recorder = None
        self.last_used = time.monotonic()
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self.tracker = self.pool.borrow(self.controls.tracker_settings(self.base), "live", self._on_frame)

    def _on_frame(self, frame) -> None:
        with self._lock:
            if self.recorder is not None:
                self.recorder.write(frame)
        self.latest_bgr = self.tracker.draw(frame, self.opts)
        self.frames_out += 1
        faces = len(frame.faces)
        stages = " · ".join(f"{k} {v:.0f}" for k, v in frame.timings_ms.items())
        if self.frames_out % 10 == 1:      # the percentiles over the window cost more than a frame's drawing
            self._stats = self.tracker.stats
        st = self._stats
        self.stats = (f"**{st.fps:.1f} fps** · latency p50 {st.latency_p50_ms:.0f} / p95 {st.latency_p95_ms:.0f} ms · "
                      f"faces {faces}{'' if faces else ' (no face found)'} · dropped {st.dropped}"
                      f"  \nms: {stages} · smoothing {self.controls.smoothing}{' · REC' if self.recorder else ''}")

    def push(self, image_bgr: np.ndarray | Callable[[], np.ndarray]) -> None:
        self.last_used = time.monotonic()
        self.tracker.process_async(image_bgr)

    def apply(self, controls: Controls) -> None:
        """New control values, applied to the running stream: a landmarker change swaps the model
        (a new tracker), anything else keeps tracks, ids and calibration."""
        old, self.controls = self.controls, controls
        self.opts = controls.draw_options()
        if controls.landmarker != old.landmarker:
            self._stop_tracker()
            self._start()
        elif (controls.smoothing, controls.strength) != (old.smoothing, old.strength):
            settings = controls.tracker_settings(self.base)
            knobs = settings.smoothing_settings()
            self.tracker.set_smoothing(settings.smoothing, **(asdict(knobs) if knobs is not None else {}))

    def calibrate(self) -> None:
        self.tracker.calibrate()

    def start_recording(self) -> None:
        with self._lock:
            if self.recorder is None:
                self.files_dir.mkdir(parents=True, exist_ok=True)
                self.recorder = self.tracker.open_recorder(Path(tempfile.mkdtemp(prefix="rec-", dir=self.files_dir)) / "landmarks.csv")

    def stop_recording(self) -> str | None:
        with self._lock:
            rec, self.recorder = self.recorder, None
        if rec is None:
            return None
        rec.close()
        return str(rec.path)

    def _stop_tracker(self) -> None:
        self.pool.give_back(self.tracker)

    def close(self) -> None:
        self.stop_recording()
        self._stop_tracker()


class LiveSessions:
    """The live sessions of one server, by session id: at most `gradio.max_sessions` at once."""

    def __init__(self, base: TrackSettings, files_dir: Path):
        self.base, self.files_dir = base, files_dir
        self.pool = TrackerPool()
        self._sessions: dict[str, LiveSession] = {}
        self._controls: dict[str, Controls] = {}
        self._lock = threading.Lock()

    def controls(self, sid: str, controls: Controls) -> None:
        """The page's controls changed: remembered, and applied to the running session if there is one."""
        with self._lock:
            self._controls[sid] = controls
            session = self._sessions.get(sid)
        if session is not None:
            session.apply(controls)

    def get(self, sid: str) -> LiveSession:
        """The tab's session, started on its first frame."""
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                if len(self._sessions) >= self.base.gradio.max_sessions:
                    raise SessionLimit(f"{len(self._sessions)} live sessions are running, the limit of this server "
                                       "(gradio.max_sessions); close another tab or try again later")
                controls = self._controls.get(sid) or Controls(self.base.landmarker, self.base.smoothing)
                session = self._sessions[sid] = LiveSession(self.base, controls, self._session_dir(sid), self.pool)
            return session

    def known(self, sid: str) -> bool:
        """A session id this server handed to a page (only those may start a session)."""
        with self._lock:
            return sid in self._controls

    def find(self, sid: str) -> LiveSession | None:
        with self._lock:
            return self._sessions.get(sid)

    def _session_dir(self, sid: str) -> Path:
        d = self.files_dir / f"session-{sid}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self, sid: str | None) -> None:
        """The tab closed (or its connection ended): pipeline, threads and files go."""
        if not sid:
            return
        with self._lock:
            session = self._sessions.pop(sid, None)
            self._controls.pop(sid, None)
        if session is not None:
            session.close()
        shutil.rmtree(self.files_dir / f"session-{sid}", ignore_errors=True)

    def close_all(self) -> None:
        for sid in list(self._sessions):
            self.close(sid)
        self.pool.close()
