"""What travels through the pipeline: a Frame and, per tracked face, a Face."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from models.detector import FaceBox


@dataclass
class HeadPose:
    rotation_deg: np.ndarray      # (3,) yaw, pitch, roll
    translation: np.ndarray       # (3,) in template units (~mm) from the camera
    rvec: np.ndarray              # (3,) Rodrigues vector, for drawing axes
    tvec: np.ndarray              # (3,)


@dataclass
class Face:
    track_id: int
    box: FaceBox
    landmarks_px: np.ndarray                  # (K,2) raw, image px
    confidence: np.ndarray                    # (K,)
    scheme: str                               # "300w-68", "mediapipe-478", ...
    smoothed_px: np.ndarray | None = None     # (K,2) after the smoother
    pose: HeadPose | None = None
    pose_smoothed: HeadPose | None = None
    detected: bool = False                    # True on frames where the detector (re)found it
    expressions: dict[str, float] | None = None   # ARKit-named blendshape values in [0, 1]
    pupils_px: np.ndarray | None = None       # (2,2) image px: the pupil of the eye drawn by iBUG 36-41, then 42-47
    eye_outline_px: np.ndarray | None = None  # (12,2) image px: iBUG 36-47 as the eye network places them (eye shapes)

    @property
    def landmarks(self) -> np.ndarray:
        """(K,2) image px: the smoothed landmarks where the smoother ran, else the raw ones."""
        return self.landmarks_px if self.smoothed_px is None else self.smoothed_px


@dataclass
class Frame:
    index: int
    timestamp_s: float                        # source clock (files) or monotonic capture time (cameras)
    image: np.ndarray                         # BGR uint8
    captured_at: float = field(default_factory=time.perf_counter)
    boxes: list[FaceBox] = field(default_factory=list)
    box_tracks: list[int] = field(default_factory=list)
    new_tracks: set[int] = field(default_factory=set)
    faces: list[Face] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.captured_at) * 1000
