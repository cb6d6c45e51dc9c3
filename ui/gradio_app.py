"""The web app: live webcam over WebRTC (default) or Gradio's streaming images, and a video-file tab.

One server: FastAPI with aiortc's offer/answer route (ui/webrtc.py) and the Gradio Blocks mounted
on it. Each browser tab gets a session id when the page loads; both live transports and every
control reach the tab's LiveSession through it (ui/live.py), so controls change the running
session in place and record/stop always reach the session that runs. Disk stays bounded: Gradio's
cache and our files live in one temporary folder that is swept as we go and removed on shutdown;
uploads over the limit are refused while they stream in.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import cv2

from hihtrack import SourceError, TrackSettings, describe_choices, load_recording, resolve_auto
from ui.live import DEFAULT_DRAW, DRAW_CHOICES, Controls, LiveSessions, SessionLimit, TrackerPool


def process_video(base: TrackSettings, files_dir: Path, path: str, controls: Controls, pool: TrackerPool, progress=None):
    """Video tab: the whole file through the tracker -> (annotated mp4, landmarks csv, track, message)."""
    p = Path(path)
    size_mb = p.stat().st_size / 1e6
    if size_mb == 0:
        raise ValueError("the uploaded file is empty")
    if size_mb > base.gradio.max_upload_mb:
        raise ValueError(f"the uploaded file is {size_mb:.0f} MB; the limit is {base.gradio.max_upload_mb:.0f} MB "
                         "(gradio.max_upload_mb)")
    out_dir = Path(tempfile.mkdtemp(prefix="video-", dir=files_dir))
    csv, mp4 = out_dir / "landmarks.csv", out_dir / "annotated.mp4"
    settings = replace(controls.tracker_settings(base), source=str(p), record=str(csv), record_video=str(mp4),
                       record_format="csv", realtime=False, live=False, max_frames=0)
    tracker = pool.borrow(settings)
    try:
        source = tracker.open_video(str(p))          # a SourceError names a file that is not a video
        total = source.frame_count

        def on_frame(frame) -> None:
            if progress is not None and total:
                progress(min(1.0, (frame.index + 1) / total), desc=f"frame {frame.index + 1}/{total}")

        summary = tracker.run(source, tracker.outputs(source, controls.draw_options()), on_frame)
    finally:
        pool.give_back(tracker)
    n = summary.frames
    msg = f"{n} frames, faces found in {summary.frames_with_face}" if summary.frames_with_face else f"{n} frames: no face found"
    return str(mp4), str(csv), load_recording(csv), msg


def track_plot(track: dict | None, point: int):
    """x and y of one landmark over time, raw vs smoothed (first face slot). A bare Figure, not
    pyplot's: pyplot keeps every figure it made, and memory grew with each processed upload."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4))
    axes = fig.subplots(2, 1, sharex=True)
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


def build_app(settings: TrackSettings, sessions: LiveSessions, files_dir: Path, webrtc: bool = True):
    import gradio as gr

    from ui.webrtc import session_html

    web = settings.gradio

    def controls_of(landmarker, smoothing, strength, draw) -> Controls:
        return Controls(landmarker, smoothing, float(strength), list(draw or []))

    def on_load(landmarker, smoothing, strength, draw):
        sid = uuid.uuid4().hex
        sessions.controls(sid, controls_of(landmarker, smoothing, strength, draw))
        return sid, session_html(sid)

    def on_controls(sid, landmarker, smoothing, strength, draw):
        if sid:
            sessions.controls(sid, controls_of(landmarker, smoothing, strength, draw))

    def on_frame(frame, sid):
        if frame is None or not sid:
            return None, "waiting for the camera…"
        try:
            session = sessions.get(sid)
        except SessionLimit as e:
            return None, str(e)
        session.push(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        out = session.latest_bgr
        if out is None:
            return None, session.stats
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
        return (out[:, ::-1] if web.mirror_display else out), session.stats

    def on_stats(sid):
        session = sessions.find(sid) if sid else None
        return session.stats if session is not None else "press Start camera"

    def on_calibrate(sid):
        session = sessions.find(sid) if sid else None
        if session is None:
            return "start the camera first"
        session.calibrate()
        return "neutral face taken: expressions are now relative to it"

    def on_record(recording, sid):
        session = sessions.find(sid) if sid else None
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
            video, csv_path, track, msg = process_video(settings, files_dir, path, controls_of(landmarker, smoothing, strength, draw),
                                                        sessions.pool, progress)
        except (SourceError, ValueError) as e:
            raise gr.Error(str(e)) from None
        return video, [video, csv_path], track_plot(track, int(point)), msg, track

    with gr.Blocks(title="hihtrack") as app:
        gr.Markdown("# hihtrack · live face landmarks (Heatmap In Heatmap)")
        sid = gr.State(None, delete_callback=sessions.close)   # the tab closed: its session goes
        with gr.Row():
            landmarker = gr.Dropdown(["hih", "mediapipe"], value=settings.landmarker, label="landmarker")
            smoothing = gr.Radio(["shape", "kalman", "one_euro", "none"], value=settings.smoothing, label="smoothing")
            strength = gr.Slider(0, 1, value=0.25, step=0.05, label="smoothing strength (responsive … steady)")
            draw = gr.CheckboxGroup(DRAW_CHOICES, value=DEFAULT_DRAW, label="draw")
        controls = [landmarker, smoothing, strength, draw]
        live_tabs = []
        with gr.Tab("Live webcam (WebRTC)", visible=webrtc) as rtc_tab:
            rtc_block = gr.HTML(elem_id="rtc")
        live_tabs.append(rtc_tab)
        with gr.Tab("Live webcam (images)") as img_tab:
            with gr.Row():
                inp = gr.Image(sources=["webcam"], streaming=True, type="numpy", elem_id="inp", label="camera",
                               webcam_options=gr.WebcamOptions(mirror=False))
                out = gr.Image(elem_id="out", label="landmarks", streaming=True)
        live_tabs.append(img_tab)
        if web.transport == "image" or not webrtc:
            live_tabs.reverse()
        stats = gr.Markdown("press Start camera", elem_id="stats")
        with gr.Row():
            record = gr.Checkbox(False, label="record landmarks", elem_id="record")
            rec_file = gr.File(label="recording", elem_id="rec_file")
            rec_msg = gr.Markdown()
            calibrate = gr.Button("calibrate neutral face (expressions)", elem_id="calibrate")
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

        app.load(on_load, controls, [sid, rtc_block])
        for c in controls:
            c.change(on_controls, [sid, *controls], None)
        inp.stream(on_frame, [inp, sid], [out, stats], stream_every=web.stream_every, time_limit=web.time_limit_s,
                   concurrency_limit=None)
        gr.Timer(0.5).tick(on_stats, [sid], [stats])
        record.change(on_record, [record, sid], [record, rec_file, rec_msg])
        calibrate.click(on_calibrate, [sid], [rec_msg])
        run_btn.click(on_video, [video_in, *controls, point], [video_out, downloads, plot, video_msg, track_state])
        point.change(track_plot, [track_state, point], [plot])
    return app


class Sweeper:
    """Deletes files older than max_age_s under the given folders, every every_s, and all of them on stop."""

    def __init__(self, folders: list[Path], every_s: float, max_age_s: float, keep=lambda path: False):
        self.folders, self.every_s, self.max_age_s, self.keep = folders, every_s, max_age_s, keep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cache-sweeper")

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sweep(self.max_age_s)

    def sweep(self, max_age_s: float) -> int:
        removed, now = 0, time.time()
        for folder in self.folders:
            for path in sorted(folder.rglob("*"), reverse=True):    # files first, then emptied folders
                try:
                    if path.is_file() and now - path.stat().st_mtime > max_age_s and not self.keep(path):
                        path.unlink()
                        removed += 1
                    elif path.is_dir() and not any(path.iterdir()) and now - path.stat().st_mtime > max_age_s \
                            and not self.keep(path):
                        path.rmdir()
                except OSError:
                    continue      # in use or already gone: the next sweep tries again
        return removed

    def stop(self) -> None:
        self._stop.set()
        self.sweep(-1)


def serve(settings: TrackSettings) -> None:
    """Run the web app until Ctrl-C / SIGTERM; sessions, peer connections and files go with it."""
    page, choices = resolve_auto(settings)
    if choices:
        print(f"the web page: {describe_choices(choices)}", file=sys.stderr)
    settings, web = page, page.gradio
    files_dir = Path(tempfile.mkdtemp(prefix="hihtrack-web-"))
    cache = Path(os.environ.setdefault("GRADIO_TEMP_DIR", str(files_dir / "gradio-cache")))   # before gradio's import
    cache.mkdir(parents=True, exist_ok=True)
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from ui.webrtc import BROWSER_JS, RtcServer, add_routes

    sessions = LiveSessions(settings, files_dir)
    live_dirs = lambda path: any(part.startswith("session-") for part in path.parts)  # noqa: E731 - open recordings
    sweeper = Sweeper([cache, files_dir], web.delete_cache[0], web.delete_cache[1], keep=live_dirs).start()
    webrtc = not web.share      # a share link tunnels HTTP only: the live tab then uses images
    blocks = build_app(settings, sessions, files_dir, webrtc).queue(default_concurrency_limit=None)
    try:
        if web.share:
            blocks.launch(server_name=web.host, server_port=web.port, share=True, show_error=True,
                          max_file_size=int(web.max_upload_mb * 1e6))
            return
        api = FastAPI()
        rtc = RtcServer(sessions, web.ice_servers)
        add_routes(api, rtc)
        api.router.on_shutdown.append(rtc.close_all)
        app = gr.mount_gradio_app(api, blocks, path="/", head=BROWSER_JS, max_file_size=int(web.max_upload_mb * 1e6),
                                  allowed_paths=[str(files_dir)], show_error=True)
        uvicorn.run(app, host=web.host, port=web.port, log_level="warning")
    finally:
        sessions.close_all()
        sweeper.stop()
        shutil.rmtree(files_dir, ignore_errors=True)

