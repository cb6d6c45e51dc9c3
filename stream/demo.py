"""The built-in demo clip: license-clean face photos moved by a known, smooth random affine motion.

Photos: scikit-image's `astronaut` (Eileen Collins, NASA, public domain) and matplotlib's
`grace_hopper.jpg` (US Navy, public domain), both shipped inside those pip packages.
Every frame's photo -> frame matrix is known, so the ground-truth motion of every face is known
(the jitter/lag benchmark reuses it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.sources import AvSource, Source

FRAME_SIZE = (640, 480)
# The default clip (one face, the default motion, 300 frames) also ships encoded (`hihtrack export
# --shipped`, a test keeps it current): a file pipeline is CPU-bound, and decoding a frame costs 1.2-1.5
# ms of CPU where rendering it costs 2.6-2.9 (OpenCV's warp on 2 cores), so the demo would otherwise
# run slower than the same frames read from a file and the first command would not show the tracker's speed.
SHIPPED_CLIP = Path(__file__).resolve().parent / "media" / "demo_clip.mp4"
SHIPPED_CLIP_FRAMES = 300
# Landmark-extent squares of each photo's face (centre x, y, side in photo px), measured once with
# BlazeFace + its 300-W calibration (models/detector.py) on the untransformed photo.
BACKGROUND = 60          # grey level around the moving photo or tiles
PHOTO_FACES = {"astronaut": (225.6, 129.9, 92.8), "grace_hopper": (266.1, 248.2, 179.0)}


def load_photo(name: str) -> np.ndarray:
    if name == "astronaut":
        import skimage.data
        return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    import matplotlib.cbook as cbook
    return cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@dataclass
class MotionConfig:
    rotate_deg: float = 12.0
    scale: float = 0.15           # +- relative
    shift_px: float = 60.0
    brightness: float = 0.2       # +- relative
    period_s: float = 6.0         # slowest component's period


class DemoMotion:
    """Smooth random affine motion: each parameter is a sum of 3 sinusoids with seeded phases."""

    def __init__(self, seed: int = 0, cfg: MotionConfig | None = None, fps: float = 30.0):
        self.cfg = cfg or MotionConfig()
        rng = np.random.default_rng(seed)
        self.phase = rng.uniform(0, 2 * np.pi, (5, 3))
        self.freq = 1 / self.cfg.period_s * np.array([1.0, 1.7, 2.9])
        self.fps = fps

    def params(self, t_s: float) -> np.ndarray:
        """(5,) in [-1, 1]: rotation, scale, shift x, shift y, brightness."""
        return np.sin(2 * np.pi * self.freq[None, :] * t_s + self.phase).mean(1)


def face_matrix(photo_face: tuple[float, float, float], frame_center: np.ndarray, face_px: float,
                p: np.ndarray, cfg: MotionConfig) -> np.ndarray:
    """photo px -> frame px: the face square centred at frame_center, `face_px` wide, moved by p."""
    cx, cy, side = photo_face
    s = face_px / side * (1 + cfg.scale * p[1])
    a = np.deg2rad(cfg.rotate_deg * p[0])
    rot = s * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    t = frame_center + cfg.shift_px * p[2:4] - rot @ np.array([cx, cy])
    return np.hstack([rot, t[:, None]])


class DemoSource(Source):
    """One face: the whole photo moves. N faces: each face is cut out of its photo (a square tile of
    TILE x its landmark square) and the tiles move in their own columns, far enough apart that no two
    ever overlap, so every face stays fully visible and a multi-face benchmark measures N faces."""

    live = False
    TILE = 1.4
    MAX_FACES = 8        # more would make each tile smaller than the detector finds

    def __init__(self, frames: int = 300, fps: float = 30.0, faces: int = 1, seed: int = 0, realtime: bool = False,
                 face_px: float = 150.0, motion: MotionConfig | None = None):
        self.n, self.fps, self.realtime = frames, fps, realtime
        names = (["astronaut", "grace_hopper"] * faces)[:faces]
        self.photos = [(load_photo(n), PHOTO_FACES[n]) for n in names]
        self.tiles = faces > 1
        # tiles: each photo with its tile as a 4th channel, so one warp moves both
        self._shown = [self._tile_corners(face) for _, face in self.photos] if self.tiles else []
        self._rgba = [np.dstack([photo, self._region(photo, face)]) for photo, face in self.photos] if self.tiles else []
        w, h = FRAME_SIZE
        spacing = w / (faces + 1)
        self.centers = [np.array([spacing * (i + 1), h / 2]) for i in range(faces)]
        motion = motion or MotionConfig()
        if faces > 1:  # tile half-width (with the largest zoom) + shift stays within half the spacing
            self.face_px = min(face_px, 0.4 * spacing / (self.TILE / 2 * (1 + motion.scale)))
            motion = MotionConfig(**{**motion.__dict__, "shift_px": min(motion.shift_px, 0.1 * spacing)})
        else:
            self.face_px = face_px
        self.motions = [DemoMotion(seed + i, motion, fps) for i in range(faces)]
        self.description = f"demo clip ({faces} face{'s' if faces > 1 else ''}, {frames} frames, {w}x{h})"
        # the shipped encoding holds exactly these frames when the clip is the default one
        default = (faces, seed, fps, face_px, motion) == (1, 0, 30.0, 150.0, MotionConfig())
        self.clip = SHIPPED_CLIP if default and frames <= SHIPPED_CLIP_FRAMES and SHIPPED_CLIP.is_file() else None

    def matrices(self, index: int) -> list[np.ndarray]:
        """Ground truth: each face's photo -> frame matrix at frame `index`."""
        t = index / self.fps
        return [face_matrix(face, c, self.face_px, m.params(t), m.cfg)
                for (_, face), c, m in zip(self.photos, self.centers, self.motions)]

    def true_boxes(self, index: int) -> list[tuple[np.ndarray, float]]:
        """(centre px, side px) of each face's landmark square in frame `index`."""
        out = []
        for (_, (cx, cy, side)), m in zip(self.photos, self.matrices(index)):
            out.append((m[:, :2] @ np.array([cx, cy]) + m[:, 2], side * float(np.sqrt(abs(np.linalg.det(m[:, :2]))))))
        return out

    def render(self, index: int) -> np.ndarray:
        """Frame `index`, in a few ms (the clip must not slow down what it demonstrates): one warp per
        face, the brightness change and (tiles) the paste, done by OpenCV in uint8."""
        w, h = FRAME_SIZE
        if not self.tiles:      # the whole photo moves: one 3-channel warp onto the background, then the light
            (photo, _), m, motion = self.photos[0], self.matrices(index)[0], self.motions[0]
            gain = 1 + motion.cfg.brightness * motion.params(index / self.fps)[4]
            frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(BACKGROUND / gain,) * 3)
            return cv2.multiply(frame, (gain, gain, gain, 0), dst=frame)     # saturating; the border ends at BACKGROUND
        frame = np.full((h, w, 3), BACKGROUND, np.uint8)
        for rgba, shown, m, motion in zip(self._rgba, self._shown, self.matrices(index), self.motions):
            # only the frame rectangle the shown part lands in is warped
            corners = shown @ m[:, :2].T + m[:, 2]
            x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
            x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
            if x1 <= x0 or y1 <= y0:
                continue
            shifted = m - np.array([[0, 0, x0], [0, 0, y0]])
            warped = cv2.warpAffine(rgba, shifted, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
            gain = 1 + motion.cfg.brightness * motion.params(index / self.fps)[4]
            lit = cv2.cvtColor(cv2.multiply(warped, (gain, gain, gain, 1.0)), cv2.COLOR_BGRA2BGR)   # saturating
            cv2.copyTo(lit, cv2.compare(cv2.extractChannel(warped, 3), 127, cv2.CMP_GT), frame[y0:y1, x0:x1])
        return frame

    def _tile_corners(self, face: tuple[float, float, float]) -> np.ndarray:
        """(4,2) photo px corners of the face's tile."""
        cx, cy, side = face
        r = self.TILE * side / 2
        return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]], np.float64)

    def _region(self, photo: np.ndarray, face: tuple[float, float, float]) -> np.ndarray:
        """uint8 mask of the face's tile in its photo."""
        (x0, y0), (x1, y1) = self._tile_corners(face)[[0, 2]]
        region = np.zeros(photo.shape[:2], np.uint8)
        region[max(0, int(y0)):int(y1), max(0, int(x0)):int(x1)] = 255
        return region

    def images(self):
        """The clip's frames: decoded from the shipped encoding where it holds them (the file is closed
        when the caller stops), else rendered."""
        if self.clip is None:
            yield from (self.render(i) for i in range(self.n))
            return
        decoder = AvSource(str(self.clip))
        try:
            yield from (image for _, (image, _) in zip(range(self.n), decoder.frames()))
        finally:
            decoder.close()

    def frames(self):
        """(image, timestamp s) pairs. Paced (`realtime`), a frame is decoded when it is due, as a camera's
        frame arrives: a capture thread waits for the camera between frames, so the decode of the next
        frame never runs beside the processing of this one (decoded ahead, it held the GIL and the caches
        then, and the paced latency grew by 1-2 ms for hih and MediaPipe alike)."""
        start = time.perf_counter()
        images = self.images()
        try:
            for i in range(self.n):
                if self.realtime:
                    delay = i / self.fps - (time.perf_counter() - start)
                    if delay > 0:
                        time.sleep(delay)
                image = next(images, None)
                if image is None:
                    return
                yield image, i / self.fps
        finally:
            images.close()      # the shipped clip's decoder, when the caller stops early


# A frame counter drawn into the bottom-right corner: STAMP_BITS black/white blocks of STAMP_PX, most
# significant bit first, that survive video coding, so a page can tell which camera frame it shows.
STAMP_BITS, STAMP_PX = 8, 16


def stamp_counter(image: np.ndarray, counter: int) -> None:
    h, w = image.shape[:2]
    y0, x0 = h - 2 * STAMP_PX, w - (STAMP_BITS + 1) * STAMP_PX
    for bit in range(STAMP_BITS):
        on = (counter >> (STAMP_BITS - 1 - bit)) & 1
        image[y0:y0 + STAMP_PX, x0 + bit * STAMP_PX:x0 + (bit + 1) * STAMP_PX] = 255 if on else 0


def write_y4m(path, source: DemoSource, stamp: bool = False, there_and_back: bool = False) -> int:
    """The clip as YUV4MPEG2 (I420), e.g. for Chromium's fake camera (--use-file-for-fake-video-capture)
    -> frames written. `stamp`: each frame carries its place in the file (stamp_counter), for
    glass-to-glass latency. `there_and_back`: the clip forwards, then backwards without repeating its
    ends, so a player that loops the file never makes the face jump (a camera's face does not teleport)."""
    w, h = FRAME_SIZE
    images = [image for image, _ in source.frames()]
    if there_and_back:
        images += images[-2:0:-1]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{int(source.fps)}:1 Ip A1:1 C420jpeg\n".encode())
        for i, image in enumerate(images):
            if stamp:
                image = image.copy()        # a frame shown twice gets its own counter each time
                stamp_counter(image, i)
            f.write(b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())
    return len(images)


def write_shipped_clip(path: Path = SHIPPED_CLIP) -> Path:
    """Render the default clip and encode it where DemoSource plays it from (`hihtrack export --shipped`)."""
    from stream.video_writer import VideoWriter
    source = DemoSource(frames=SHIPPED_CLIP_FRAMES)
    writer = VideoWriter(path, source.fps, overwrite=True)
    for i in range(SHIPPED_CLIP_FRAMES):
        writer.write(source.render(i), i / source.fps)
    writer.close()
    return path
