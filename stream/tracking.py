"""Detect once, then track from the last landmarks (as OpenSeeFace and MediaPipe do).

Track-id policy: a face keeps its id while every frame's landmarks stay confident; a face that is
lost (landmarker finds nothing, or mean confidence under `lost_confidence`) loses its track, and
when the detector finds it again it gets a new id. Ids are never reused within a run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from models.detector import STILL_TILES, FaceBox, find_faces, iou
from models.landmarkers import box_change, crop_box
from models.schema import setting


@dataclass
class TrackingConfig:
    detect_every: int = setting(10, 1, 10_000, help="also run the detector every N frames, to pick up new faces")
    lost_confidence: float = setting(0.25, 0.0, 1.0, help="a track whose mean landmark confidence falls below this is dropped")
    match_iou: float = setting(0.3, 0.0, 1.0, help="overlap (IoU) at which a detection continues a track")
    max_faces: int = setting(10, 1, 100, help="faces tracked at once")
    # As MediaPipe smooths its ROI: a still face then gets the identical crop every frame, so the
    # crop -> landmarks -> crop loop cannot make the points jitter.
    box_hysteresis: float = setting(0.03, 0.0, 1.0, help="the crop box follows the landmarks only when they move more "
                                    "than this fraction of the face side")
    # models.landmarkers.settle
    refine_passes: int = setting(3, 0, 10, help="a new face or a photo: re-crop from its own landmarks up to N times ...")
    refine_tolerance: float = setting(0.01, 0.0, 1.0, help="... until its box moves less than this fraction of the face side")
    still_tiles: int = setting(STILL_TILES, 0, 4, help="photos: also look for small faces in N x N overlapping tiles; "
                               "0 = whole image only")


@dataclass
class Track:
    track_id: int
    box: FaceBox                              # the crop box: moved only past the hysteresis
    age: int = 0
    landmarks_px: np.ndarray | None = None
    face: FaceBox | None = None               # the square of the last landmarks
    step: float | None = None                 # how far that square moved in the last frame (box_change)


class _Detection:
    """The detector run on a copy of one image in its own thread (the caller may draw on the original)."""

    def __init__(self, detector, image: np.ndarray):
        self._boxes: list[FaceBox] = []
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(detector, image.copy()), name="detect", daemon=True)
        self.thread.start()

    def _run(self, detector, image: np.ndarray) -> None:
        try:
            self._boxes = detector(image)
        except BaseException as e:  # noqa: BLE001 - raised in the tracking thread by result()
            self._error = e

    def result(self) -> list[FaceBox]:
        self.thread.join()
        if self._error is not None:
            raise self._error
        return self._boxes


@dataclass
class Tracker:
    detector: object
    cfg: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        self.tracks: dict[int, Track] = {}
        self._next_id = 0
        self._last_detect = -10 ** 9
        self._pending: _Detection | None = None
        self._lock = threading.Lock()  # a UI thread may read the tracks while the landmark stage writes them

    def boxes(self, image: np.ndarray, index: int) -> tuple[list[int], list[FaceBox], set[int]]:
        """(track ids, boxes, ids that are new this frame) for the landmarker.

        With no face tracked the detector runs now, on this frame. With faces tracked, the periodic
        look for new faces runs in the background on this frame while its landmarks are computed (the
        detector and the landmark network then use both cores), and its faces join at the next frame:
        always the next one, so a file is still tracked the same way every run."""
        new = self._join(self._pending.result()) if self._pending is not None else set()
        self._pending = None
        with self._lock:
            tracked = bool(self.tracks)
        if not tracked:
            self._last_detect = index
            new |= self._join(self.detector(image))
        elif index - self._last_detect >= self.cfg.detect_every:
            self._last_detect = index
            self._pending = _Detection(self.detector, image)
        with self._lock:
            tracks = dict(self.tracks)
        ids = list(tracks)
        return ids, [tracks[i].box for i in ids], new

    def _join(self, detections: list[FaceBox]) -> set[int]:
        """Detections that overlap no track start tracks (up to max_faces) -> their ids."""
        new: set[int] = set()
        with self._lock:
            for det in detections:
                if len(self.tracks) >= self.cfg.max_faces:
                    break
                if all(iou(det.xyxy(), t.box.xyxy()) < self.cfg.match_iou for t in self.tracks.values()):
                    tid = self._next_id
                    self._next_id += 1
                    self.tracks[tid] = Track(tid, det)
                    new.add(tid)
        return new

    def wait(self) -> None:
        """Let a background detection finish (before its detector is closed)."""
        if self._pending is not None:
            self._pending.thread.join()

    def boxes_likely_kept(self) -> bool:
        """Whether the next frame will likely get this frame's boxes (the pipeline's look-ahead): every
        face's landmark square, moved on as far again as in its last step, stays within the hysteresis
        of its crop box. (A background detection joining then seldom adds a face; when it does, the
        look-ahead is not used.)"""
        with self._lock:
            return bool(self.tracks) and all(
                t.step is not None and box_change(t.box, t.face) + t.step <= self.cfg.box_hysteresis
                for t in self.tracks.values())

    def detect_only(self, image: np.ndarray) -> tuple[list[int], list[FaceBox], set[int]]:
        """Stills: every face found gets a fresh id and nothing is carried to the next image."""
        boxes = find_faces(self.detector, image, self.cfg.still_tiles)[:self.cfg.max_faces]
        ids = list(range(self._next_id, self._next_id + len(boxes)))
        self._next_id += len(boxes)
        return ids, boxes, set(ids)

    def confident(self, result) -> bool:
        return result is not None and float(np.mean(result.confidence)) >= self.cfg.lost_confidence

    def update(self, track_ids: list[int], results: list) -> list[int]:
        """Feed the landmarks back; returns the ids that were lost."""
        lost = []
        with self._lock:
            for tid, res in zip(track_ids, results):
                t = self.tracks.get(tid)
                if t is None:
                    continue
                if not self.confident(res):
                    lost.append(tid)
                    del self.tracks[tid]
                    continue
                t.landmarks_px = res.landmarks_px
                box = crop_box(res.landmarks_px, float(np.mean(res.confidence)))
                t.step = box_change(t.face, box) if t.face is not None else None
                t.face = box
                if t.age == 0 or box_change(t.box, box) > self.cfg.box_hysteresis:
                    t.box = box
                t.age += 1
            # two tracks that converged on one face: keep the older
            ids = sorted(self.tracks)
            for i, a in enumerate(ids):
                for b in ids[i + 1:]:
                    if a in self.tracks and b in self.tracks and \
                            iou(self.tracks[a].box.xyxy(), self.tracks[b].box.xyxy()) > 0.5:
                        lost.append(b)
                        del self.tracks[b]
        return lost
