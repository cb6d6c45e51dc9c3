"""The one typed settings object for tracking, built once: configs/pipeline.yaml, then the user's
--config layered on it (only the keys they change), then flags. Checked against the dataclasses
below (models.schema): a wrong type, an unknown key or an out-of-range value is one line.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.schema import SettingsError, deep_merge, dotted, from_mapping, ranged, read_yaml
from stream.smoothing import KalmanConfig, OneEuroConfig, ShapeConfig
from stream.tracking import TrackingConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ROOT / "configs/pipeline.yaml"
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))   # more only adds contention (1000 made 3001 threads, 11-41 s a frame)


@dataclass
class WebSettings:
    host: str = "127.0.0.1"
    port: int = ranged(7860, 1, 65535)
    share: bool = False
    stream_every: float = ranged(0.05, 0.01, 2.0)   # s between browser frames (docs/gradio-ceiling.md)
    time_limit_s: int = ranged(3600, 10, 86_400)
    max_upload_mb: float = ranged(500.0, 1.0, 10_000.0)
    delete_cache: tuple[int, int] = (60, 900)        # sweep every N s the cached files older than M s
    max_sessions: int = ranged(8, 1, 256)            # live browser sessions at once; more are refused with a message
    mirror_display: bool = False
    transport: Literal["webrtc", "image"] = "webrtc"  # live tab: WebRTC (aiortc) or Gradio's streaming images
    ice_servers: list[str] = field(default_factory=list)   # e.g. stun:host:3478; empty = host candidates only


@dataclass
class TrackSettings:
    source: str = "auto"
    ui: Literal["auto", "opencv", "gradio", "none"] = "auto"
    landmarker: Literal["hih", "mediapipe"] = "hih"
    weights: str | None = None
    device: str = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    threads: int = ranged(0, 0, MAX_THREADS)
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    crop_views: Literal[0, 1, 2, 4] = 0   # HIH crops per face (staggered, mirrored), averaged; 0: 2 on a GPU, 1 on a CPU
    record: str | None = None
    record_format: Literal["csv", "jsonl", "npz"] | None = None
    record_video: str | None = None
    send: list[str] = field(default_factory=list)
    calibration: str | None = None    # expression calibration profile (JSON): loaded if it exists, written by calibrate
    overwrite: bool = False
    max_frames: int = ranged(0, 0)
    realtime: bool = False            # pace a file at its own frame rate (then, like a camera, it drops frames)
    live: bool = False                # treat an http(s) URL as a live stream (drop frames) rather than a file
    reconnect: bool = False
    reconnect_attempts: int = ranged(10, 1, 1000)
    demo_frames: int = ranged(300, 1, 1_000_000)
    folder_mode: Literal["auto", "stills", "video"] = "auto"
    max_image_mpix: float = ranged(100.0, 0.1, 2000.0)   # larger images are refused from their header, before decoding
    detector: Literal["blazeface", "haar"] = "blazeface"
    detector_min_score: float = ranged(0.5, 0.0, 1.0)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: Literal["shape", "kalman", "one_euro", "none"] = "shape"
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    gradio: WebSettings = field(default_factory=WebSettings)

    def __post_init__(self):
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", self.device):
            raise SettingsError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N")

    def smoothing_settings(self):
        """The chosen smoother's own config (None for 'none')."""
        return getattr(self, self.smoothing, None)


def load_settings(config: str | Path | None = None, **overrides) -> TrackSettings:
    """configs/pipeline.yaml, then `config` (a YAML path or a dict) layered on it, then `overrides`
    (keyword settings; dotted names such as `tracking.detect_every` reach nested ones)."""
    data = read_yaml(DEFAULTS)
    where = ""
    if config is not None:
        user = config if isinstance(config, dict) else read_yaml(config)
        data = deep_merge(data, user)
        where = "" if isinstance(config, dict) else f"{config}: "
    try:
        from_mapping(TrackSettings, data)      # the file's own mistakes are reported with its name
    except SettingsError as e:
        raise SettingsError(f"{where}{e}") from None
    return from_mapping(TrackSettings, deep_merge(data, dotted(overrides)))
