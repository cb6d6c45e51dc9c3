"""FaceTracker: open once, then track sources or process single images.

    from hihtrack import FaceTracker
    with FaceTracker(source="clip.mp4", smoothing="shape") as tracker:
        for frame in tracker.track():
            for face in frame.faces:
                print(frame.index, face.track_id, face.landmarks[:3])

    tracker.process(image_bgr)                   # one photo: detected and refined on its own
    tracker.process(image_bgr, timestamp_s=t)    # a video frame: tracked from the previous one

`build_parts` is the one place that assembles detector, landmarker and tracker from the typed
settings (`stream.settings.TrackSettings`); the HIH network is loaded once per process and shared.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from models.schema import UserError
from stream.frames import Frame
from stream.pipeline import FrameProcessor, Pipeline, PipelineConfig
from stream.settings import TrackSettings, load_settings
from stream.sources import Source, SourceError, _to_bgr, default_source, open_source
from stream.tracking import Tracker

_SHARED: dict[tuple, object] = {}
_SHARED_LOCK = threading.Lock()


class InputError(UserError, ValueError):
    """An image or timestamp handed to the API that it cannot use."""


def build_landmarker(settings: TrackSettings, shared: bool = True):
    """The landmarker the settings name. HIH is loaded once per process and shared (it is stateless
    per call); MediaPipe's graph keeps state, so every caller gets its own."""
    from models.landmarkers import build_landmarker as build
    if settings.landmarker != "hih":
        return build(settings.landmarker)
    key = (settings.weights, settings.device, settings.precision, settings.threads, settings.backend,
           settings.crop_views)
    if not shared:
        return build("hih", weights=settings.weights, device=settings.device, precision=settings.precision,
                     threads=settings.threads, backend=settings.backend, views=settings.crop_views)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = build_landmarker(settings, shared=False)
        return _SHARED[key]


def build_parts(settings: TrackSettings, landmarker=None):
    """(landmarker, detector) for these settings: the one assembly every front end calls."""
    from models.detector import build_detector
    kwargs = {"min_score": settings.detector_min_score} if settings.detector == "blazeface" else {}
    return landmarker or build_landmarker(settings), build_detector(settings.detector, **kwargs)


@dataclass
class RunSummary:
    """What one run over a source did."""
    source: str
    frames: int = 0
    frames_with_face: int = 0
    fps: float = 0.0
    latency_p50_ms: float = float("nan")
    latency_p95_ms: float = float("nan")
    dropped: int = 0
    stage_p50_ms: dict = field(default_factory=dict)
    error: str | None = None
    interrupted: bool = False


class FaceTracker:
    """Open once (models loaded), then track any number of sources, or process single images."""

    def __init__(self, settings: TrackSettings | None = None, *, landmarker=None, config=None, **overrides):
        """`settings` as built by stream.settings.load_settings, or the same keys as keyword arguments
        (`FaceTracker(smoothing="kalman", tracking={"detect_every": 5})`), layered on configs/pipeline.yaml."""
        if settings is None:
            settings = load_settings(config, **overrides)
        elif overrides or config is not None:
            raise TypeError("pass either a settings object or keyword settings, not both")
        self.settings = settings
        self._owns_landmarker = landmarker is None and settings.landmarker != "hih"
        self.landmarker, self.detector = build_parts(settings, landmarker)
        self.pipeline: Pipeline | None = None            # the running stream: stats, live controls (pipeline.work)
        self.last_summary: RunSummary | None = None
        self._sync: dict[bool, FrameProcessor] = {}      # process(): stills and video-mode state
        self._last_ts: float | None = None
        self._sync_index = 0
        self._calibrate_next = False                     # calibrate() before a processor exists

    # ---- assembly ---------------------------------------------------------------------------
    def pipeline_config(self) -> PipelineConfig:
        s = self.settings
        return PipelineConfig(smoothing=s.smoothing, smoothing_settings=s.smoothing_settings(), calibration=s.calibration)

    def new_tracker(self) -> Tracker:
        return Tracker(self.detector, replace(self.settings.tracking))

    def open_source(self, spec: str | int | None = None, notify: Callable[[str], None] | None = None) -> Source:
        """A source from a spec (None: the settings' source; 'auto': the webcam, else the demo clip)."""
        s = self.settings
        spec = str(s.source if spec is None else spec)
        if spec == "auto":
            spec, notice = default_source()
            if notice and notify:
                notify(notice)
        return open_source(spec, realtime=s.realtime, demo_frames=s.demo_frames, folder_mode=s.folder_mode,
                           live=s.live, max_image_mpix=s.max_image_mpix)

    # ---- streams ----------------------------------------------------------------------------
    def track(self, source: Source | str | int | None = None, *, max_frames: int | None = None,
              notify: Callable[[str], None] | None = None) -> Iterator[Frame]:
        """Processed frames in order, from a source object or spec. A live source that stops is reopened
        (`reconnect`) up to `reconnect_attempts` times in a row without a frame in between, then gives up."""
        s = self.settings
        spec = None if isinstance(source, Source) else source
        source = source if isinstance(source, Source) else self.open_source(spec, notify)
        limit = s.max_frames if max_frames is None else max_frames
        emitted, failures = 0, 0
        while True:
            pipe = Pipeline(source, self.new_tracker(), self.landmarker, self.pipeline_config()).start()
            pipe.work.calibrate_requested = self._calibrate_next
            self.pipeline = pipe
            emitted_before = emitted
            try:
                for frame in pipe.results():
                    emitted += 1
                    yield frame
                    if limit and emitted >= limit:
                        return
                return
            except SourceError as e:
                failures = 0 if emitted > emitted_before else failures + 1
                if not (s.reconnect and source.live and spec is not None):
                    raise
                if failures > s.reconnect_attempts:
                    raise SourceError(f"{e}; gave up after {s.reconnect_attempts} reconnect attempts without a frame") from None
                if notify:
                    notify(f"{e}; reconnecting ({failures}/{s.reconnect_attempts})")
                time.sleep(min(2.0 * failures, 10.0))
                source = self._reopen(spec)
            finally:
                pipe.stop()
                self.last_summary = self._summary(pipe, source)

    def _reopen(self, spec) -> Source:
        try:
            return self.open_source(spec)
        except SourceError as e:
            return _FailedSource(str(e))   # counts as a failed attempt in track()

    def run(self, source: Source | str | int | None = None, outputs: list | None = None,
            on_frame: Callable[[Frame], bool | None] | None = None, notify: Callable[[str], None] | None = None) -> RunSummary:
        """Track a whole source into `outputs` (recorders, senders, video writers: each has write/close);
        `on_frame` may return False to stop. Outputs are closed on every ending, Ctrl-C and SIGTERM included."""
        outputs = outputs or []
        with_face, error, interrupted = 0, None, False
        frames = self.track(source, notify=notify)
        try:
            for frame in frames:
                with_face += bool(frame.faces)
                for out in outputs:
                    out.write(frame)
                if on_frame is not None and on_frame(frame) is False:
                    break
        except SourceError as e:
            error = str(e)
        except KeyboardInterrupt:     # Ctrl-C, or SIGTERM turned into it by run.py: outputs still closed
            interrupted = True
        finally:
            frames.close()
            for out in outputs:
                out.close()
        summary = self.last_summary or RunSummary(str(source))
        summary.frames_with_face, summary.error, summary.interrupted = with_face, error, interrupted
        return summary

    @staticmethod
    def _summary(pipe: Pipeline, source: Source) -> RunSummary:
        s = pipe.stats.summary()
        return RunSummary(source.description, s["frames_out"], 0, s["fps"], s["latency_p50_ms"], s["latency_p95_ms"],
                          s["dropped"], s["stage_p50_ms"])

    # ---- single images --------------------------------------------------------------------
    def process(self, image_bgr: np.ndarray, timestamp_s: float | None = None) -> Frame:
        """One image, synchronously. Without a timestamp it is a photo (detected and refined on its own);
        with one it is the next frame of a video (tracked and smoothed; timestamps must increase)."""
        image = _checked_image(image_bgr)
        stills = timestamp_s is None
        if not stills:
            if not np.isfinite(timestamp_s) or (self._last_ts is not None and timestamp_s <= self._last_ts):
                raise InputError(f"timestamp_s {timestamp_s} must be finite and larger than the previous one ({self._last_ts})")
            self._last_ts = float(timestamp_s)
        proc = self._sync.get(stills)
        if proc is None:
            proc = self._sync[stills] = FrameProcessor(self.new_tracker(), self.landmarker, self.pipeline_config(), stills)
            proc.calibrate_requested = self._calibrate_next
        self._sync_index += 1
        return proc(Frame(self._sync_index - 1, 0.0 if stills else float(timestamp_s), image))

    def calibrate(self) -> None:
        """Take the next frame's face as the resting (neutral) face of the expressions; with the
        `calibration` setting it is also saved there, and loaded by the next run."""
        self._calibrate_next = True
        for work in [*self._sync.values(), *([self.pipeline.work] if self.pipeline is not None else [])]:
            work.calibrate_requested = True

    # ---- outputs ------------------------------------------------------------------------------
    def outputs(self, source: Source) -> list:
        """The recorder, annotated video and senders the settings ask for (record, record_video, send)."""
        from stream.outputs import open_outputs
        from ui.draw import DrawOptions, draw_frame
        return open_outputs(self.settings, self.landmarker, source, lambda frame: draw_frame(frame, DrawOptions(), None))

    def close(self) -> None:
        self.detector.close()
        if self._owns_landmarker:
            self.landmarker.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FailedSource(Source):
    """Stands in for a source that did not reopen, so the retry loop counts it and goes on."""
    live = True

    def __init__(self, why: str):
        self.description = why

    def frames(self):
        raise SourceError(self.description)
        yield   # makes this a generator (never reached)


def _checked_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0 \
            or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        what = f"array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"expected an image as a numpy array (H, W) or (H, W, 3) BGR, got {what}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return _to_bgr(np.ascontiguousarray(image))
