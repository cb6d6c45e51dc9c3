"""FaceTracker: open once, then track sources, or process images in an explicit running mode.

    from hihtrack import FaceTracker
    with FaceTracker(source="clip.mp4", smoothing="shape") as tracker:
        for frame in tracker.track():
            for face in frame.faces:
                print(frame.index, face.track_id, face.landmarks[:3])

Running modes (as MediaPipe Tasks' IMAGE / VIDEO / LIVE_STREAM), for images you hand over yourself:
    "image"  tracker.process(image_bgr)                  every image a photo: detected and refined on its own
    "video"  tracker.process(image_bgr, timestamp_s=t)   frames of one video: tracked, smoothed, t increasing
    "live"   tracker.process_async(image_bgr)            returns at once; results reach result_callback(frame);
                                                         a frame that arrives while the tracker is busy
                                                         replaces the waiting one (a camera never waits)
`track()` and `run()` take a whole source (file, camera, folder, URL) in any mode.

`build_parts` is the one place that assembles detector, landmarker and tracker from the typed
settings (`stream.settings.TrackSettings`); the HIH network is loaded once per process and shared.
"""
from __future__ import annotations

import threading
import time
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from models.schema import UserError, deep_merge, from_mapping
from stream.draw import DrawOptions, draw_frame
from stream.frames import Frame
from stream.pipeline import FrameProcessor, Pipeline, PipelineConfig
from stream.settings import TrackSettings, load_settings, resolve_auto
from stream.sources import PushSource, Source, SourceError, _to_bgr, default_source, open_source
from stream.tracking import Tracker

RunningMode = Literal["image", "video", "live"]
RUNNING_MODES: tuple[str, ...] = typing.get_args(RunningMode)

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


@dataclass(frozen=True)
class TrackerStats:
    """The running (or last) stream, as a UI shows it."""
    frames: int = 0
    fps: float = 0.0
    dropped: int = 0
    latency_p50_ms: float = float("nan")
    latency_p95_ms: float = float("nan")
    stage_p50_ms: dict = field(default_factory=dict)


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

    def __init__(self, settings: TrackSettings | None = None, *, running_mode: RunningMode = "image",
                 result_callback: Callable[[Frame], None] | None = None, landmarker=None, config=None, **overrides):
        """`settings` as built by stream.settings.load_settings, or the same keys as keyword arguments
        (`FaceTracker(smoothing="kalman", tracking={"detect_every": 5})`), layered on the defaults (`hihtrack config`).
        `running_mode` says how `process`/`process_async` treat the images handed to them (module doc);
        `result_callback` receives each processed frame in live mode (on the tracker's thread)."""
        if running_mode not in RUNNING_MODES:
            raise InputError(f"running_mode {running_mode!r} is not one of {', '.join(RUNNING_MODES)}")
        if running_mode == "live" and result_callback is None:
            raise InputError("running_mode 'live' needs a result_callback(frame) to hand the results to")
        if settings is None:
            settings = load_settings(config, **overrides)
        elif overrides or config is not None:
            raise TypeError("pass either a settings object or keyword settings, not both")
        # every "auto" made concrete once; auto_choices says what was chosen and why (printed by the CLI,
        # kept in recordings through the settings)
        self.settings, self.auto_choices = resolve_auto(settings)
        self.running_mode: RunningMode = running_mode
        self.result_callback = result_callback
        self._owns_landmarker = landmarker is None and settings.landmarker != "hih"
        self.landmarker, self.detector = build_parts(self.settings, landmarker)
        self._pipeline: Pipeline | None = None           # the running (or last) stream
        self.last_summary: RunSummary | None = None
        self._sync: FrameProcessor | None = None         # process(): image or video state
        self._last_ts: float | None = None
        self._sync_index = 0
        self._calibrate_next = False                     # calibrate() before a processor exists
        self._smoothing_enabled = True
        self._live_source: PushSource | None = None      # made on first use (a recording may name it first)
        self._live_thread: threading.Thread | None = None

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

    def open_video(self, path: str) -> Source:
        """A video file as a source (every frame kept); a SourceError says when it is not a video."""
        from stream.sources import AvSource
        return AvSource(str(path))

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
            pipe = Pipeline(source, self.new_tracker(), self.landmarker, self.pipeline_config())
            pipe.work.calibrate_requested = self._calibrate_next
            pipe.work.smoothing_enabled = self._smoothing_enabled
            self._pipeline = pipe.start()
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

    # ---- images handed over one by one ---------------------------------------------------------
    def process(self, image_bgr: np.ndarray, timestamp_s: float | None = None) -> Frame:
        """One image, synchronously: in "image" mode a photo (detected and refined on its own), in
        "video" mode the next frame of a video (tracked and smoothed; timestamps must increase)."""
        if self.running_mode == "live":
            raise InputError("this tracker runs in live mode: hand frames to process_async(); "
                             "use running_mode='image' or 'video' for process()")
        stills = self.running_mode == "image"
        if stills and timestamp_s is not None:
            raise InputError("a timestamp means a video frame, but this tracker runs in image mode; "
                             "create it with running_mode='video'")
        if not stills and timestamp_s is None:
            raise InputError("video mode needs each frame's timestamp_s (seconds, increasing)")
        image = _checked_image(image_bgr)
        if not stills:
            if not np.isfinite(timestamp_s) or (self._last_ts is not None and timestamp_s <= self._last_ts):
                raise InputError(f"timestamp_s {timestamp_s} must be finite and larger than the previous one ({self._last_ts})")
            self._last_ts = float(timestamp_s)
        if self._sync is None:
            self._sync = FrameProcessor(self.new_tracker(), self.landmarker, self.pipeline_config(), stills)
            self._sync.calibrate_requested = self._calibrate_next
            self._sync.smoothing_enabled = self._smoothing_enabled
        self._sync_index += 1
        return self._sync(Frame(self._sync_index - 1, 0.0 if stills else float(timestamp_s), image))

    def process_async(self, image_bgr: np.ndarray | Callable[[], np.ndarray], timestamp_s: float | None = None) -> None:
        """Live mode: hand over a frame (or a function that decodes it, called only if the tracker
        takes the frame) and return at once; its result reaches result_callback. The first call starts
        the stream, `stop_live()` (or close) ends it."""
        if self.running_mode != "live":
            raise InputError(f"process_async() is for running_mode='live'; this tracker runs in {self.running_mode} mode")
        if self._live_thread is None:
            self._live_thread = threading.Thread(target=self._run_live, args=(self.live_source,), name="hihtrack-live",
                                                 daemon=True)
            self._live_thread.start()
        if not callable(image_bgr):
            image_bgr = _checked_image(image_bgr)
        self.live_source.push(image_bgr, timestamp_s)

    @property
    def live_source(self) -> PushSource:
        """The source process_async feeds (what recordings of the live stream name as their source)."""
        if self._live_source is None:
            self._live_source = PushSource("frames handed to process_async")
        return self._live_source

    def _run_live(self, source: PushSource) -> None:
        try:
            self.run(source, on_frame=lambda frame: self.result_callback(frame))
        except SourceError:
            pass

    def stop_live(self) -> None:
        """End the live stream (a frame still waiting is dropped); the next process_async starts a new one."""
        if self._live_thread is not None:
            self._live_source.close()
            self._live_thread.join(timeout=10)
            self._live_source = self._live_thread = None

    # ---- live controls and readouts ------------------------------------------------------------
    @property
    def stats(self) -> TrackerStats:
        """Frames, rate, drops and latency of the running stream (or the last one)."""
        if self._pipeline is None:
            return TrackerStats()
        s = self._pipeline.stats.summary()
        return TrackerStats(s["frames_out"], s["fps"], s["dropped"], s["latency_p50_ms"], s["latency_p95_ms"],
                            s["stage_p50_ms"])

    @property
    def smoothing_enabled(self) -> bool:
        return self._smoothing_enabled

    @smoothing_enabled.setter
    def smoothing_enabled(self, on: bool) -> None:
        """Off: the smoothed landmarks are the raw ones (the filters keep running, so switching back is seamless)."""
        self._smoothing_enabled = bool(on)
        for work in self._workers():
            work.smoothing_enabled = self._smoothing_enabled

    def set_smoothing(self, smoothing: str, **knobs) -> None:
        """Change the landmark filter, from the next frame on; tracks, ids and calibration stay.
        `knobs` are the filter's own settings (e.g. `min_cutoff` for one_euro), checked as a config's."""
        current = asdict(self.settings.smoothing_settings()) if self.settings.smoothing == smoothing else {}
        section = {smoothing: {**current, **knobs}} if smoothing != "none" else {}
        self.settings = from_mapping(TrackSettings, deep_merge(asdict(self.settings), {"smoothing": smoothing, **section}))
        for work in self._workers():
            work.set_smoothing(smoothing, self.settings.smoothing_settings())

    def calibrate(self) -> None:
        """Take the next frame's face as the resting (neutral) face of the expressions; with the
        `calibration` setting it is also saved there, and loaded by the next run."""
        self._calibrate_next = True
        for work in self._workers():
            work.calibrate_requested = True

    def _workers(self) -> list[FrameProcessor]:
        return [*([self._sync] if self._sync is not None else []), *([self._pipeline.work] if self._pipeline is not None else [])]

    def draw(self, frame: Frame, options: DrawOptions | None = None, stats_text: list[str] | None = None) -> np.ndarray:
        """The frame's image with its faces drawn (`DrawOptions`: points, mesh, box, pose axes, glasses...)."""
        return draw_frame(frame, options or DrawOptions(), stats_text)

    # ---- outputs ------------------------------------------------------------------------------
    def outputs(self, source: Source, draw_options: DrawOptions | None = None) -> list:
        """The recorder, annotated video (drawn with `draw_options`) and senders the settings ask for
        (record, record_video, send)."""
        from stream.outputs import open_outputs
        return open_outputs(self.settings, self.landmarker, source, lambda frame: self.draw(frame, draw_options))

    def open_recorder(self, path: str | Path, source: Source | None = None):
        """A recording of this tracker's faces at `path` (format from the extension), its metadata naming
        `source` (default: the live stream). write(frame) each frame, then close()."""
        from stream.outputs import open_recorder
        return open_recorder(self.settings, self.landmarker, source or self.live_source, path)

    def close(self) -> None:
        self.stop_live()
        for work in self._workers():
            work.tracker.wait()
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
