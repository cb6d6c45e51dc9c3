"""Annotated video out through PyAV: H.264 when the build has it (else MPEG-4), frames stamped with
the source's own timestamps so variable frame rates and dropped frames keep their timing. The audio
of a file source is passed through untouched (packets remuxed, not re-encoded), cut to the video."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from models.schema import UserError


class VideoWriteError(UserError, OSError):
    pass


class VideoWriter:
    def __init__(self, path: str | Path, fps: float = 30.0, overwrite: bool = False, audio_from: str | None = None):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise VideoWriteError(f"{self.path} already exists; choose another name or pass --overwrite")
        self.fps = fps
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w")
        except ValueError:    # PyAV: no muxer for this extension
            raise VideoWriteError(f"cannot write video {self.path.name}: unknown container; use .mp4, .mkv or .avi") from None
        except OSError as e:
            raise VideoWriteError(f"cannot write video {self.path} ({e.strerror or e.__class__.__name__}); "
                                  "choose a path in a folder you can write to") from None
        self._stream = None
        self._audio_src = self._audio_in = self._audio_out = None
        if audio_from and Path(audio_from).is_file():
            src = av.open(audio_from)
            if src.streams.audio:
                self._audio_src, self._audio_in = src, src.streams.audio[0]
                self._audio_out = self._container.add_stream_from_template(self._audio_in)
            else:
                src.close()
        self._t0: float | None = None
        self._last_pts = -1
        self.frames = 0

    def _open_stream(self, width: int, height: int) -> None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2   # yuv420p needs even sizes
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, 1000)   # millisecond timestamps
        if codec == "libx264":
            self._stream.options = {"preset": "veryfast", "crf": "23"}

    def write(self, image_bgr: np.ndarray, timestamp_s: float) -> None:
        if self._stream is None:
            self._open_stream(image_bgr.shape[1], image_bgr.shape[0])
            self._t0 = timestamp_s
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr[:h, :w]), format="bgr24")
        pts = max(int(round((timestamp_s - self._t0) * 1000)), self._last_pts + 1)
        frame.pts, frame.time_base, self._last_pts = pts, Fraction(1, 1000), pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        if self._audio_src is not None:
            self._copy_audio()
        self._container.close()

    def _copy_audio(self) -> None:
        """Remux the source's audio packets that fall within the written video's time span."""
        end_s = (self._t0 or 0.0) + self._last_pts / 1000 + 1 / self.fps
        t0 = self._t0 or 0.0
        for packet in self._audio_src.demux(self._audio_in):
            if packet.dts is None or packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            if t < t0:
                continue
            if t > end_s:
                break
            offset = int(round(t0 / packet.time_base))
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = self._audio_out
            self._container.mux(packet)
        self._audio_src.close()


class AnnotatedVideoSink:
    """Sink: draws each frame (ui-independent drawing is passed in) and encodes it on its own thread.
    The queue blocks rather than drops: a recorded video keeps every processed frame."""

    def __init__(self, writer: VideoWriter, render, queue_size: int = 64):
        import queue
        import threading
        self.writer, self.render = writer, render
        self.q: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, daemon=True, name="video-writer")
        self._thread.start()

    def write(self, frame) -> None:
        self.q.put((self.render(frame), frame.timestamp_s))

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            self.writer.write(*item)

    def close(self) -> None:
        self.q.put(None)
        self._thread.join(timeout=60)
        self.writer.close()
