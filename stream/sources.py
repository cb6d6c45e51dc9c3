"""Frame sources: webcam (OpenCV), files and network streams (PyAV), image folders, the demo clip.

Every source yields (image BGR uint8, timestamp_s) and says whether it is live (a camera or a
network stream: frames may be dropped) or a file (every frame is processed, unless paced).
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from models.schema import IMAGE_EXTS, UserError

NETWORK_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
LIVE_SCHEMES = ("rtsp://", "rtmp://", "udp://", "tcp://", "srt://")   # http(s) is a file unless said live
MAX_CAMERA_INDEX = 63
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m", ".gif", ".ts", ".flv", ".wmv")


class SourceError(UserError, RuntimeError):
    """A source that cannot be opened or read; the message says what to do."""


class Source:
    live = False
    stills = False          # unrelated photos: nothing is tracked from one image to the next
    fps: float | None = None
    description = ""

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class WebcamSource(Source):
    live = True

    def __init__(self, index: int, width: int = 640, height: int = 480):
        self.cap = _quiet_capture(index)
        if not self.cap.isOpened():
            raise SourceError(f"camera {index} did not open; check it is connected and free, or use --source demo / a video file")
        self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.description = f"camera {index}"

    def frames(self):
        while True:
            ok, img = self.cap.read()
            if not ok:
                raise SourceError(f"{self.description} stopped delivering frames (disconnected?)")
            yield img, time.monotonic()

    def close(self):
        self.cap.release()


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Grayscale / RGBA / 16-bit frames -> 3-channel uint8 BGR."""
    if image.dtype != np.uint8:
        image = (image / (np.iinfo(image.dtype).max / 255)).astype(np.uint8) if image.dtype.kind in "ui" else \
            np.clip(image * 255, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class AvSource(Source):
    """Video files and network streams through PyAV, with the stream's own timestamps."""

    def __init__(self, location: str, realtime: bool = False, timeout_s: float = 10.0, live: bool | None = None):
        """`live`: drop frames like a camera. Default: streaming protocols (rtsp, udp, ...) are live; a file,
        local or over http(s), keeps every frame unless `realtime` paces it (see --live, --realtime)."""
        import av
        remote = location.startswith(NETWORK_SCHEMES)
        self.live = location.startswith(LIVE_SCHEMES) if live is None else live
        self.realtime = realtime
        self.description = location
        if not remote:
            p = Path(location)
            if not p.is_file():
                raise SourceError(f"video file {location} not found; check the path")
            if p.stat().st_size == 0:
                raise SourceError(f"video file {location} is empty (0 bytes)")
        try:
            self.container = av.open(location, timeout=(timeout_s, timeout_s) if remote else None)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise SourceError(f"cannot open {location} as video ({e.__class__.__name__}: {str(e)[:100]}); "
                              "check it is a playable video or reachable stream") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{location} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 30.0

    @property
    def frame_count(self) -> int | None:
        """Frames the container says it holds (None when it does not say)."""
        return self.stream.frames or None

    def frames(self):
        import av
        start_wall, first_ts = None, None
        n = 0
        try:
            for frame in self.container.decode(self.stream):
                ts = float(frame.time) if frame.time is not None else n / self.fps
                n += 1
                if self.realtime:
                    if start_wall is None:
                        start_wall, first_ts = time.perf_counter(), ts
                    delay = (ts - first_ts) - (time.perf_counter() - start_wall)
                    if delay > 0:
                        time.sleep(delay)
                yield _to_bgr(frame.to_ndarray(format="bgr24")), ts
        except av.FFmpegError as e:
            if n == 0:
                raise SourceError(f"cannot decode {self.description} ({str(e)[:100]}); the file is corrupt or unsupported") from None
            # a truncated file: keep what decoded, end cleanly
        if n == 0:
            raise SourceError(f"{self.description} holds no decodable video frames")

    def close(self):
        self.container.close()


FOLDER_MODES = ("auto", "stills", "video")


class FolderSource(Source):
    """Image files, in name order: either video frames (tracked from one to the next) or unrelated
    photos (`stills`: each one detected and refined on its own, nothing carried over)."""

    # consecutive video frames differ by a few grey levels on 32 px thumbnails; unrelated photos by tens
    SAME_SCENE_GREY = 12.0

    def __init__(self, folder: str | None = None, fps: float = 30.0, mode: str = "auto", paths: list[Path] | None = None,
                 max_image_mpix: float = 100.0):
        self.paths = paths or sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        self.max_pixels = max_image_mpix * 1e6
        self.skipped: list[str] = []     # images not processed, with the reason (too large, unreadable)
        if not self.paths:
            raise SourceError(f"folder {folder} has no images ({', '.join(IMAGE_EXTS)})")
        if mode not in FOLDER_MODES:
            raise SourceError(f"folder mode {mode!r} is not one of {', '.join(FOLDER_MODES)}")
        self.fps = fps
        reason = "as asked (--folder-mode)"
        if mode == "auto":
            mode, reason = self._guess_mode()
        self.stills = mode == "stills"
        what = "stills, each photo on its own" if self.stills else "video frames, tracked"
        name = self.paths[0] if len(self.paths) == 1 else folder
        self.description = f"{name} ({len(self.paths)} image{'s' * (len(self.paths) > 1)} as {what}: {reason})"

    def _guess_mode(self) -> tuple[str, str]:
        if len(self.paths) == 1:
            return "stills", "a single image"
        from PIL import Image
        sizes = set()
        for p in self.paths:
            try:
                with Image.open(p) as im:   # reads the header only
                    sizes.add(im.size)
            except OSError:
                continue
        if len(sizes) > 1:
            return "stills", "the images differ in size"
        thumbs = [self._thumb(p) for p in self.paths[:12]]
        diffs = [float(np.abs(a - b).mean()) for a, b in zip(thumbs, thumbs[1:]) if a is not None and b is not None]
        if diffs and np.median(diffs) < self.SAME_SCENE_GREY:
            return "video", f"same size, consecutive images alike (median change {np.median(diffs):.1f} grey levels)"
        return "stills", "consecutive images are different scenes"

    @staticmethod
    def _thumb(path: Path) -> np.ndarray | None:
        img = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_4)
        return None if img is None else cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)

    def frames(self):
        for i, p in enumerate(self.paths):
            # an unreadable or oversized file in a folder is skipped (and listed), the rest still run
            problem = image_problem(p, self.max_pixels)
            img = None if problem else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None:
                self.skipped.append(f"{p.name}: {problem or 'unreadable'}")
                continue
            yield _to_bgr(img), i / self.fps
        if len(self.skipped) == len(self.paths):
            raise SourceError(f"none of the {len(self.paths)} image(s) could be read ({self.skipped[0]}"
                              f"{', …' if len(self.skipped) > 1 else ''}); check the files are whole images")


class PushSource(Source):
    """A live source fed frame by frame (a browser's camera, FaceTracker.process_async): it keeps only
    the newest frame, so whoever pushes never waits for the tracker."""

    live = True

    def __init__(self, description: str = "pushed frames"):
        self.description = description
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._t0 = time.monotonic()

    def push(self, image_bgr: np.ndarray | Callable[[], np.ndarray], timestamp_s: float | None = None) -> None:
        """A frame, or a function that decodes it (called only for the frames the tracker takes), and
        its time (default: seconds since the source opened)."""
        try:
            self._q.get_nowait()           # drop the unprocessed older frame
        except queue.Empty:
            pass
        self._q.put_nowait((image_bgr, time.monotonic() - self._t0 if timestamp_s is None else timestamp_s))

    def frames(self):
        while not self._closed.is_set():
            try:
                image, ts = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            yield (image() if callable(image) else image), ts

    def close(self) -> None:
        self._closed.set()



def image_problem(path: Path, max_pixels: float) -> str | None:
    """Why an image file must not be decoded (from its header only), or None. A 30000 x 30000 PNG
    would take gigabytes to decode, and crashed MediaPipe's detector."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:   # PIL's own guard (over 2 x its limit) says how many pixels
        found = re.search(r"\((\d+) pixels\)", str(e))
        w, h = (int(found.group(1)), 1) if found else (int(max_pixels) + 1, 1)
    except Exception:  # noqa: BLE001 - PIL raises many types for a damaged header; cv2 gets a second try
        return None
    if w * h > max_pixels:
        size = f"{w} x {h} pixels" if h > 1 else f"{w / 1e6:.0f} megapixels"
        return f"{size} is over the {max_pixels / 1e6:.0f}-megapixel limit (max_image_mpix)"
    return None


def open_source(spec: str | int, realtime: bool = False, demo_frames: int = 300, fps: float = 30.0,
                folder_mode: str = "auto", live: bool = False, max_image_mpix: float = 100.0) -> Source:
    """'demo', a camera index, a URL, a video file, an image file or an image folder."""
    from stream.demo import DemoSource
    spec = str(spec)
    if spec == "demo" or spec.startswith("demo:"):
        count = spec.partition(":")[2] or "1"
        if not count.isdigit() or not 1 <= int(count) <= DemoSource.MAX_FACES:
            raise SourceError(f"demo source {spec!r}: write demo or demo:N with N from 1 to {DemoSource.MAX_FACES} faces")
        return DemoSource(frames=demo_frames, fps=fps, faces=int(count), realtime=realtime)
    if spec.isdigit():
        if int(spec) > MAX_CAMERA_INDEX:
            raise SourceError(f"camera index {spec} is out of range (0 to {MAX_CAMERA_INDEX}); "
                              "give the index of a connected camera, or a file")
        return WebcamSource(int(spec))
    if spec.startswith(NETWORK_SCHEMES):
        return AvSource(spec, realtime=realtime, live=True if live else None)
    if "://" in spec:
        raise SourceError(f"unsupported URL scheme in {spec!r}; supported: {', '.join(NETWORK_SCHEMES)}")
    p = Path(spec)
    if p.is_dir():
        return FolderSource(spec, fps, folder_mode, max_image_mpix=max_image_mpix)
    if not p.exists():
        raise SourceError(f"source {spec!r} not found: give a camera index, a video file, an image folder, a URL or 'demo'")
    if p.suffix.lower() in IMAGE_EXTS:
        problem = image_problem(p, max_image_mpix * 1e6)
        if problem:
            raise SourceError(f"image {spec} is too large: {problem}; resize it or raise max_image_mpix")
        if cv2.imread(spec, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
            raise SourceError(f"cannot read image {spec}: the file is damaged or not an image")
        return FolderSource(fps=fps, paths=[p], max_image_mpix=max_image_mpix)
    return AvSource(spec, realtime=realtime)


def _quiet_capture(index: int) -> cv2.VideoCapture:
    """Open a camera without OpenCV's own log lines for a missing device: we say it in one line."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)   # 0 = silent
    try:
        return cv2.VideoCapture(index)
    finally:
        cv2.setLogLevel(level)


def default_source() -> tuple[str, str | None]:
    """The first webcam if one opens, else the demo clip, with a notice saying so."""
    cap = _quiet_capture(0)
    ok = cap.isOpened() and cap.read()[0]
    cap.release()
    if ok:
        return "0", None
    return "demo", "no webcam found: using the built-in demo clip (--source demo)"
