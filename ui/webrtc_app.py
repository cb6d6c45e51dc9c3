"""Live webcam over WebRTC with the `fastrtc` package: an optional second transport.

fastrtc pins gradio<6 while this project pins gradio 6, so it lives in its own environment:

    python3 -m venv .venv-rtc && .venv-rtc/bin/pip install fastrtc torch==2.13.0 mediapipe==0.10.21 \
        opencv-contrib-python==4.11.0.86 numpy==1.26.4 av filterpy PyYAML scikit-image scipy onnxruntime \
        python-osc websockets matplotlib          # resolved to fastrtc 0.0.34 + gradio 5.50.0 here
    .venv-rtc/bin/python run.py track --ui webrtc

Measured here (tests/test_webrtc_e2e.py, headless Chromium, hih on onnxruntime): the browser decoded
30.7-31.1 fps, server capture-to-output latency 19-25 ms, against 9.5 fps / 50 ms for the default
transport on the same machine.

fastrtc calls the handler inline in its asyncio loop, so the handler only hands the newest frame to
the session's pipeline and returns the newest finished annotated frame (never waits for inference).
Limitation: one tracker session for the whole server (fastrtc's handler has no per-browser state
here), so this transport is for a single user; the default Gradio transport keeps sessions apart.
"""
from __future__ import annotations

import cv2
import gradio as gr
from fastrtc import WebRTC  # at import time: `--ui webrtc` says plainly when fastrtc is missing

from ui.gradio_app import LiveSession, Resources, Settings


def build_webrtc_app(cfg: dict):
    res = Resources(cfg)
    state: dict = {"session": None}

    def on_frame(frame_bgr):
        session = state["session"]
        if session is None:
            session = state["session"] = LiveSession(res, Settings(cfg.get("landmarker", "hih"), cfg.get("smoothing", "shape")))
        session.push(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))    # LiveSession takes RGB, like gr.Image
        out = session.latest_rgb
        return frame_bgr if out is None else cv2.cvtColor(out, cv2.COLOR_RGB2BGR)

    with gr.Blocks(title="hihtrack (WebRTC)") as app:
        gr.Markdown("# hihtrack · live face landmarks over WebRTC")
        rtc = WebRTC(mode="send-receive", modality="video", elem_id="rtc", mirror_webcam=False)
        stats = gr.Markdown(elem_id="stats")
        rtc.stream(fn=on_frame, inputs=[rtc], outputs=[rtc], time_limit=int((cfg.get("gradio") or {}).get("time_limit_s", 3600)),
                   concurrency_limit=1)
        timer = gr.Timer(0.5)
        timer.tick(lambda: state["session"].stats if state["session"] else "press start", outputs=[stats])
    return app
