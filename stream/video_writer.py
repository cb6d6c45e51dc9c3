"""Annotated video out through PyAV: H.264 when the build has it (else MPEG-4), frames stamped with
the source's own timestamps so variable frame rates and dropped frames keep their timing."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoWriter:
    def __init__(self, path: str | Path, fps: float = 30.0, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; choose another name or pass --overwrite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self._container = av.open(str(self.path), "w")
        self._stream = None
        self._t0: float | None = None
        self._last_pts = -1
        self.frames = 0

    def _open_stream(self, width: int, height: int) -> None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2   # yuv420p needs even sizes
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, 1000)   # millisecond timestamps
        if codec == "libx264":
            self._stream.options = {"preset": "veryfast", "crf": "23"}

    def write(self, image_bgr: np.ndarray, timestamp_s: float) -> None:
        if self._stream is None:
            self._open_stream(image_bgr.shape[1], image_bgr.shape[0])
            self._t0 = timestamp_s
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr[:h, :w]), format="bgr24")
        pts = max(int(round((timestamp_s - self._t0) * 1000)), self._last_pts + 1)
        frame.pts, self._last_pts = pts, pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
