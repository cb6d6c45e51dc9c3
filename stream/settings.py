"""The one typed settings object for tracking, built once: the fields' defaults, then the user's
--config layered on them (only the keys they change), then flags. Checked against the dataclasses
below (models.schema): a wrong type, an unknown key or an out-of-range value is one line.

Every default and its help text is written once, in a field below. configs/pipeline.yaml is generated
from them (`hihtrack config > configs/pipeline.yaml`; a test fails when it differs), and so are the
flags of `hihtrack track`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.schema import SettingsError, deep_merge, dotted, field_default, from_mapping, read_yaml, setting
from stream.smoothing import KalmanConfig, OneEuroConfig, ShapeConfig
from stream.tracking import TrackingConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_YAML = ROOT / "configs/pipeline.yaml"     # generated: defaults_yaml()
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))   # more only adds contention (1000 made 3001 threads, 11-41 s a frame)


@dataclass
class WebSettings:
    host: str = setting("127.0.0.1", help="interface the web page listens on")
    port: int = setting(7860, 1, 65535, help="port of the web page")
    share: bool = setting(False, help="also make a public Gradio share link")
    stream_every: float = setting(0.05, 0.01, 2.0, help="s between browser frames in the image transport "
                                  "(20 fps: the measured sweet spot on 2 cores)")
    time_limit_s: int = setting(3600, 10, 86_400, help="longest live stream, s")
    max_upload_mb: float = setting(500.0, 1.0, 10_000.0, help="largest video upload, MB")
    delete_cache: tuple[int, int] = setting((60, 900), help="sweep the server's temp folder every N s of files older "
                                            "than M s (downloads stay that long)")
    max_sessions: int = setting(8, 1, 256, help="live browser sessions at once; more are refused with a message")
    mirror_display: bool = setting(False, help="frames are processed unmirrored; mirror only what is shown")
    transport: Literal["webrtc", "image"] = setting("webrtc", help="live tab: webrtc (aiortc on this server) | "
                                                    "image (Gradio's streaming images)")
    ice_servers: list[str] = setting(factory=list, help="STUN/TURN URLs for WebRTC beyond this machine; "
                                     "[] = none is contacted")


@dataclass
class TrackSettings:
    source: str = setting("auto", help="camera index, video file, image folder, URL, demo or demo:N "
                          "(auto: the webcam, else the demo clip)")
    ui: Literal["auto", "opencv", "gradio", "none"] = setting("auto", help="a window (auto: when there is a display), "
                                                              "the web page, or headless")
    landmarker: Literal["hih", "mediapipe"] = setting("hih", help="our network, or MediaPipe Face Mesh as a baseline")
    weights: str | None = setting(None, help="HIH weights: fast | small | a file; null = fast (0.6x the cost of small, "
                                  "which is 0.04 NME better on 300-W)")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N (auto: a CUDA GPU if there is one)")
    precision: Literal["fp32", "fp16", "bf16"] = setting("fp32", help="GPU precision")
    threads: int = setting(0, 0, MAX_THREADS, help="CPU inference threads; 0 = all cores but one")
    backend: Literal["onnxruntime", "torch"] = setting("onnxruntime", help="CPU inference engine (the same graph; "
                                                       "onnxruntime needs no torch at run time)")
    crop_views: Literal[0, 1, 2, 4] = setting(0, help="HIH crops per face (staggered half a cell, mirrored), averaged: "
                                              "steadier and more accurate, slower; 0 = 2 on a GPU, 1 on a CPU")
    record: str | None = setting(None, help="write the landmarks to PATH (.csv, .jsonl or .npz)")
    record_format: Literal["csv", "jsonl", "npz"] | None = setting(None, help="csv | jsonl | npz (null: from the extension)")
    record_video: str | None = setting(None, help="write the annotated video to PATH.mp4")
    record_expressions: bool = setting(False, help="the recording also keeps the expression values (ARKit shape "
                                       "names) as columns after the points")
    send: list[str] = setting(factory=list, help="osc://host:port (VMC), udp://host:port or ws://host:port; repeatable")
    calibration: str | None = setting(None, help="your expression profile (PATH.json): loaded if it exists, saved when "
                                      "you calibrate (c key / button)")
    overwrite: bool = setting(False, help="replace an existing recording")
    max_frames: int = setting(0, 0, help="stop after N frames; 0 = until the input ends")
    realtime: bool = setting(False, help="pace a file at its own frame rate, dropping frames like a camera "
                             "(without it a file keeps every frame)")
    live: bool = setting(False, help="an http(s) URL is a live stream (drop frames, allow reconnect), not a file")
    reconnect: bool = setting(False, help="reopen a camera or stream that stops delivering frames ...")
    reconnect_attempts: int = setting(10, 1, 1000, help="... this many times in a row, then give up")
    demo_frames: int = setting(300, 1, 1_000_000, help="length of the demo clip, frames")
    folder_mode: Literal["auto", "stills", "video"] = setting("auto", help="an image folder is: auto (decided from its "
                                                               "sizes and content) | stills (unrelated photos) | video (frames)")
    max_image_mpix: float = setting(100.0, 0.1, 2000.0, help="larger images are refused from their header, before decoding")
    detector: Literal["blazeface", "haar"] = setting("blazeface", help="face detector")
    detector_min_score: float = setting(0.5, 0.0, 1.0, help="detections below this score are ignored")
    tracking: TrackingConfig = setting(factory=TrackingConfig, help="how faces are found and followed")
    smoothing: Literal["shape", "kalman", "one_euro", "none"] = setting("shape", help="landmark filter (shape: head "
                                                                        "motion and face shape filtered apart)")
    kalman: KalmanConfig = setting(factory=KalmanConfig, help="the kalman filter, in face-size units")
    one_euro: OneEuroConfig = setting(factory=OneEuroConfig, help="the One Euro filter (MediaPipe's defaults, in "
                                      "face-size units)")
    shape: ShapeConfig = setting(factory=ShapeConfig, help="the shape-aware filter: similarity and shape coefficients "
                                 "filtered apart")
    gradio: WebSettings = setting(factory=WebSettings, help="the web page (--ui gradio)")

    def __post_init__(self):
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", self.device):
            raise SettingsError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N")

    def smoothing_settings(self):
        """The chosen smoother's own config (None for 'none')."""
        return getattr(self, self.smoothing, None)


def load_settings(config: str | Path | dict | None = None, **overrides) -> TrackSettings:
    """The fields' defaults, then `config` (a YAML path or a dict) layered on them, then `overrides`
    (keyword settings; dotted names such as `tracking.detect_every` reach nested ones)."""
    data: dict = {}
    if config is not None:
        data = dict(config) if isinstance(config, dict) else read_yaml(config)
        try:
            from_mapping(TrackSettings, data)      # the file's own mistakes are reported with its name
        except SettingsError as e:
            raise SettingsError(f"{'' if isinstance(config, dict) else f'{config}: '}{e}") from None
    return from_mapping(TrackSettings, deep_merge(data, dotted(overrides)))


def defaults_yaml(cls=TrackSettings, indent: str = "") -> str:
    """configs/pipeline.yaml: every setting with its default and its help as a comment."""
    import yaml
    hints = typing.get_type_hints(cls)
    lines = ["# hihtrack's settings and their defaults, generated from stream/settings.py (`hihtrack config`).",
             "# A --config file holds only the keys it changes; flags of `hihtrack track` win over both."] if not indent else []
    for f in dataclasses.fields(cls):
        note = f"  # {f.metadata['help']}" if f.metadata.get("help") else ""
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{indent}{f.name}:{note}")
            lines.append(defaults_yaml(hints[f.name], indent + "  ").rstrip("\n"))
            continue
        value = field_default(f)
        value = list(value) if isinstance(value, tuple) else value
        text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
        lines.append(f"{indent}{f.name}: {text}{note}")
    return "\n".join(lines) + "\n"


def resolve_auto(settings: TrackSettings) -> tuple[TrackSettings, dict[str, str]]:
    """Every automatic choice made in one place: the settings with device, threads, crop_views and
    weights concrete (for the HIH landmarker), and {key: "value (why)"} for what was chosen, to print
    once and to keep in recordings."""
    from models.engine import DEFAULT_WEIGHTS_NAME, auto_threads, auto_views, resolve_device
    if settings.landmarker != "hih":
        return settings, {}
    chosen, why = {}, {}
    if settings.device == "auto":
        chosen["device"] = resolve_device("auto")
        why["device"] = "a CUDA GPU" if chosen["device"] != "cpu" else "no CUDA GPU"
    device = chosen.get("device", settings.device)
    if settings.threads == 0 and device == "cpu":
        chosen["threads"], why["threads"] = auto_threads(), "all cores but one"
    if settings.crop_views == 0:
        chosen["crop_views"] = auto_views(device)
        why["crop_views"] = "2 on a GPU" if device != "cpu" else "1 on a CPU"
    if settings.weights is None:
        chosen["weights"] = DEFAULT_WEIGHTS_NAME
        why["weights"] = "the default"
    return dataclasses.replace(settings, **chosen), {k: f"{chosen[k]} ({why[k]})" for k in chosen}


def describe_choices(choices: dict[str, str]) -> str:
    """resolve_auto's choices as the one line a front end prints at start."""
    return "chosen automatically: " + ", ".join(f"{k} {v}" for k, v in choices.items())
