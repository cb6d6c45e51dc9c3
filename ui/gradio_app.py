"""The Gradio web app: live webcam tab and video-file tab, on the same pipeline objects as the CLI.

Live path: the browser streams JPEG frames (`gr.Image(streaming=True)`, `stream_every`); the
handler only hands the newest frame to the session's own pipeline (a push source whose one-frame
slot drops stale frames) and returns the newest *finished* annotated frame. Inference never runs
inside the request, so a slow model lowers the output rate, not the page's responsiveness.
Each browser session owns its tracker, filters and recordings; the HIH weights load once.
"""
from __future__ import annotations

import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream.pipeline import Pipeline, PipelineConfig
from stream.sources import Source, SourceError
from ui.draw import DrawOptions, draw_frame, stats_lines

DRAW_CHOICES = ["points", "indices", "mesh", "box", "pose axes", "AR glasses"]


class PushSource(Source):
    """A live source fed by someone else (the web handler): keeps only the newest frame."""

    live = True
    description = "browser webcam"

    def __init__(self):
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._t0 = time.monotonic()

    def push(self, image_bgr: np.ndarray) -> None:
        try:
            self._q.get_nowait()           # drop the unprocessed older frame
        except queue.Empty:
            pass
        self._q.put_nowait((image_bgr, time.monotonic() - self._t0))

    def frames(self):
        while not self._closed.is_set():
            try:
                yield self._q.get(timeout=0.2)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._closed.set()


@dataclass
class Settings:
    landmarker: str = "hih"
    smoothing: str = "shape"
    strength: float = 0.5                       # 0 = responsive .. 1 = steady
    draw: list[str] = field(default_factory=lambda: ["points", "mesh", "box", "pose axes"])

    def smoothing_settings(self, defaults: dict) -> dict:
        """Map the 0..1 strength slider onto the filter's own knob (log scale)."""
        if self.smoothing == "kalman":
            return {**defaults.get("kalman", {}), "process_noise": float(10 ** (2 - 4 * self.strength))}  # 100 .. 0.01
        if self.smoothing == "one_euro":
            return {**defaults.get("one_euro", {}), "min_cutoff": float(10 ** (1 - 3 * self.strength))}   # 10 .. 0.01
        if self.smoothing == "shape":  # the slider's start (0.25) gives the configured shape filter
            shape = defaults.get("shape", {})
            return {**shape, "shape_min_cutoff": float(shape.get("shape_min_cutoff", 0.05) * 10 ** (4 * (0.25 - self.strength)))}
        return {}

    def draw_options(self) -> DrawOptions:
        d = set(self.draw)
        return DrawOptions(points="points" in d, indices="indices" in d, mesh="mesh" in d, box="box" in d,
                           pose_axes="pose axes" in d, glasses="AR glasses" in d)


class Resources:
    """Things shared by all sessions: the HIH landmarker (weights loaded once) and settings."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self._hih = None
        self._lock = threading.Lock()

    def landmarker(self, name: str):
        from models.landmarkers import build_landmarker
        if name != "hih":
            return build_landmarker(name)          # MediaPipe graphs are per-session objects
        with self._lock:
            if self._hih is None:
                self._hih = build_landmarker("hih", weights=self.cfg.get("weights"), device=str(self.cfg.get("device", "auto")),
                                             backend=self.cfg.get("backend", "onnxruntime"))
            return self._hih

    def tracker(self):
        from models.detector import build_detector
        from stream.tracking import Tracker, TrackingConfig
        return Tracker(build_detector(self.cfg.get("detector", "blazeface")), TrackingConfig(**self.cfg.get("tracking", {})))


class LiveSession:
    """One browser tab: its own pipeline, filters, latest output and recording."""

    def __init__(self, res: Resources, settings: Settings):
        self.res, self.settings = res, settings
        self.source = PushSource()
        self.landmarker = res.landmarker(settings.landmarker)
        pcfg = PipelineConfig(smoothing=settings.smoothing, smoothing_settings=settings.smoothing_settings(res.cfg))
        self.pipe = Pipeline(self.source, res.tracker(), self.landmarker, pcfg).start()
        self.latest_rgb: np.ndarray | None = None
        self.stats = "waiting for frames…"
        self.recorder = None
        self._consumer = threading.Thread(target=self._consume, daemon=True, name="web-consumer")
        self._consumer.start()

    def _consume(self) -> None:
        opts = self.settings.draw_options()
        try:
            for frame in self.pipe.results():
                lines = stats_lines(frame, self.pipe.stats.fps(), self.pipe.stats.dropped, self.settings.smoothing,
                                    self.recorder is not None)
                if self.recorder is not None:
                    self.recorder.write(frame)
                self.latest_rgb = cv2.cvtColor(draw_frame(frame, opts, None), cv2.COLOR_BGR2RGB)
                faces = len(frame.faces)
                self.stats = (f"**{self.pipe.stats.fps():.1f} fps** · latency {frame.latency_ms():.0f} ms · "
                              f"faces {faces}{'' if faces else ' (no face found)'} · dropped {self.pipe.stats.dropped}"
                              f"  \n{lines[1]}")
        except SourceError:
            pass

    def push(self, frame_rgb: np.ndarray) -> None:
        self.source.push(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def start_recording(self) -> None:
        from stream.recorders import Recorder, RecordMeta
        path = Path(tempfile.mkdtemp(prefix="hihtrack-rec-")) / "landmarks.csv"
        meta = RecordMeta(self.landmarker.scheme, self.landmarker.num_points, self.settings.landmarker, None,
                          "browser webcam", None, None, {"mode": self.settings.smoothing})
        self.recorder = Recorder(path, meta)

    def stop_recording(self) -> str | None:
        rec, self.recorder = self.recorder, None
        if rec is None:
            return None
        rec.close()
        return str(rec.path)

    def close(self) -> None:
        self.stop_recording()
        self.pipe.stop()
        if self.settings.landmarker != "hih":
            self.landmarker.close()


def process_video(res: Resources, path: str, settings: Settings, progress=None, max_mb: float = 500.0):
    """Upload tab: the whole file through the pipeline -> (annotated mp4, landmarks csv, track, message)."""
    from stream.recorders import Recorder, RecordMeta, load_recording
    from stream.sources import AvSource
    from stream.video_writer import VideoWriter

    p = Path(path)
    if p.stat().st_size == 0:
        raise ValueError("the uploaded file is empty")
    if p.stat().st_size > max_mb * 1e6:
        raise ValueError(f"the uploaded file is {p.stat().st_size / 1e6:.0f} MB; the limit is {max_mb:.0f} MB (gradio.max_upload_mb)")
    source = AvSource(str(p))            # raises SourceError for a non-video
    total = None
    try:
        total = source.stream.frames or None
    except AttributeError:
        pass
    out_dir = Path(tempfile.mkdtemp(prefix="hihtrack-video-"))
    lm = res.landmarker(settings.landmarker)
    pcfg = PipelineConfig(smoothing=settings.smoothing, smoothing_settings=settings.smoothing_settings(res.cfg))
    pipe = Pipeline(source, res.tracker(), lm, pcfg).start()
    meta = RecordMeta(lm.scheme, lm.num_points, settings.landmarker, None, p.name, source.fps, None, {"mode": settings.smoothing})
    rec = Recorder(out_dir / "landmarks.csv", meta)
    writer = VideoWriter(out_dir / "annotated.mp4", source.fps or 30.0)
    opts = settings.draw_options()
    with_face = 0
    try:
        for frame in pipe.results():
            rec.write(frame)
            writer.write(draw_frame(frame, opts, None), frame.timestamp_s)
            with_face += bool(frame.faces)
            if progress is not None and total:
                progress(min(1.0, (frame.index + 1) / total), desc=f"frame {frame.index + 1}/{total}")
    finally:
        pipe.stop()
        rec.close()
        writer.close()
        if settings.landmarker != "hih":
            lm.close()
    n = writer.frames
    msg = f"{n} frames, faces found in {with_face}" if with_face else f"{n} frames: no face found"
    return str(out_dir / "annotated.mp4"), str(rec.path), load_recording(rec.path), msg


def track_plot(track: dict | None, point: int):
    """x and y of one landmark over time, raw vs smoothed (first face slot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
    if track is not None and track["landmarks"].shape[2] > point:
        t = track["timestamp"]
        for ax, k, name in zip(axes, (0, 1), ("x", "y")):
            ax.plot(t, track["landmarks"][:, 0, point, k], lw=0.8, label="raw")
            ax.plot(t, track["smoothed"][:, 0, point, k], lw=1.4, label="smoothed")
            ax.set_ylabel(f"{name} (px)")
        axes[0].legend(fontsize=7)
    axes[1].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def build_app(cfg: dict):
    import gradio as gr

    res = Resources(cfg)
    web = cfg.get("gradio", {}) or {}

    def settings_of(landmarker, smoothing, strength, draw):
        return Settings(landmarker, smoothing, float(strength), list(draw or []))

    def on_frame(frame, session, landmarker, smoothing, strength, draw):
        if frame is None:
            return None, "waiting for the camera…", session
        s = settings_of(landmarker, smoothing, strength, draw)
        if session is None or session.settings != s:
            if session is not None:
                rec = session.recorder
                session.recorder = None
                session.close()
            else:
                rec = None
            session = LiveSession(res, s)
            session.recorder = rec
        session.push(frame)
        out = session.latest_rgb
        if out is not None and web.get("mirror_display", False):
            out = out[:, ::-1]
        return out, session.stats, session

    def on_calibrate(session):
        if session is None:
            return "start the camera first"
        session.pipe.calibrate_requested = True
        return "neutral face taken: expressions are now relative to it"

    def on_record(recording, session):
        if session is None:
            return gr.update(value=False), None, "start the camera first"
        if recording:
            session.start_recording()
            return gr.update(), None, "recording…"
        path = session.stop_recording()
        return gr.update(), path, "recording saved" if path else ""

    def on_video(path, landmarker, smoothing, strength, draw, point, progress=gr.Progress()):
        if not path:
            raise gr.Error("choose a video file first")
        try:
            video, csv_path, track, msg = process_video(res, path, settings_of(landmarker, smoothing, strength, draw),
                                                        progress, float(web.get("max_upload_mb", 500)))
        except (SourceError, ValueError) as e:
            raise gr.Error(str(e)) from None
        return video, [video, csv_path], track_plot(track, int(point)), msg, track

    # Gradio writes every streamed output frame to its cache (~2 GB/h at 20 fps): sweep it as we go
    sweep_every_s, max_age_s = web.get("delete_cache", [60, 120])
    with gr.Blocks(title="hihtrack", delete_cache=(int(sweep_every_s), int(max_age_s))) as app:
        gr.Markdown("# hihtrack · live face landmarks (Heatmap In Heatmap)")
        with gr.Row():
            landmarker = gr.Dropdown(["hih", "mediapipe"], value=cfg.get("landmarker", "hih"), label="landmarker")
            smoothing = gr.Radio(["shape", "kalman", "one_euro", "none"], value=cfg.get("smoothing", "shape"), label="smoothing")
            strength = gr.Slider(0, 1, value=0.25, step=0.05, label="smoothing strength (responsive … steady)")
            draw = gr.CheckboxGroup(DRAW_CHOICES, value=["points", "mesh", "box", "pose axes"], label="draw")
        with gr.Tab("Live webcam"):
            session = gr.State(None, delete_callback=lambda s: s.close() if s is not None else None)
            with gr.Row():
                inp = gr.Image(sources=["webcam"], streaming=True, type="numpy", elem_id="inp", label="camera",
                               webcam_options=gr.WebcamOptions(mirror=False))
                out = gr.Image(elem_id="out", label="landmarks", streaming=True)
            stats = gr.Markdown("press Record on the camera to start", elem_id="stats")
            with gr.Row():
                record = gr.Checkbox(False, label="record landmarks", elem_id="record")
                rec_file = gr.File(label="recording", elem_id="rec_file")
                rec_msg = gr.Markdown()
                calibrate = gr.Button("calibrate neutral face (expressions)", elem_id="calibrate")
            inp.stream(on_frame, [inp, session, landmarker, smoothing, strength, draw], [out, stats, session],
                       stream_every=float(web.get("stream_every", 0.05)), time_limit=int(web.get("time_limit_s", 3600)),
                       concurrency_limit=None)
            record.change(on_record, [record, session], [record, rec_file, rec_msg])
            calibrate.click(on_calibrate, [session], [rec_msg])
        with gr.Tab("Video file"):
            track_state = gr.State(None)
            with gr.Row():
                video_in = gr.Video(label="upload a video", elem_id="video_in", sources=["upload"])
                video_out = gr.Video(label="annotated", elem_id="video_out")
            with gr.Row():
                point = gr.Slider(0, 477, value=30, step=1, label="landmark to plot")
                run_btn = gr.Button("Track", elem_id="run_video", variant="primary")
            video_msg = gr.Markdown(elem_id="video_msg")
            plot = gr.Plot(label="landmark over time: raw vs smoothed")
            downloads = gr.File(label="downloads", file_count="multiple", elem_id="downloads")
            run_btn.click(on_video, [video_in, landmarker, smoothing, strength, draw, point],
                          [video_out, downloads, plot, video_msg, track_state])
            point.change(track_plot, [track_state, point], [plot])
    return app
