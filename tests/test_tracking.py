"""Tracker: detect when nothing is tracked, look for new faces in the background while faces are
tracked, and join what that finds at exactly the next frame."""
import time

import numpy as np
import pytest

from models.detector import FaceBox
from models.landmarkers import LandmarkResult
from stream.tracking import Tracker, TrackingConfig

FACE_A = FaceBox(np.array([160.0, 240.0]), 100.0)
FACE_B = FaceBox(np.array([480.0, 240.0]), 100.0)


class FrameCountingDetector:
    """Reads the frame index written into the image; face B shows up from frame `b_from` on. Slow, so
    that a caller who paints over the image meanwhile would change what it sees."""

    def __init__(self, b_from: int, delay_s: float = 0.03):
        self.b_from, self.delay_s, self.seen = b_from, delay_s, []

    def __call__(self, image):
        time.sleep(self.delay_s)
        index = int(image[0, 0, 0])
        self.seen.append(index)
        return [FACE_A, FACE_B] if index >= self.b_from else [FACE_A]


def _square(box: FaceBox) -> LandmarkResult:
    pts = np.array([box.center_px + d for d in ([-40, -40], [40, -40], [40, 40], [-40, 40])], np.float32)
    return LandmarkResult(pts, np.ones(4, np.float32), box)


def _run(tracker: Tracker, frames: int) -> dict[int, tuple[int, set]]:
    """frame index -> (faces given to the landmarker, ids new at that frame)"""
    out = {}
    for i in range(frames):
        image = np.full((480, 640, 3), i, np.uint8)
        ids, boxes, new = tracker.boxes(image, i)
        image[:] = 255          # the caller draws over its frame: the background detector must not see it
        tracker.update(ids, [_square(b) for b in boxes])
        out[i] = (len(ids), new)
    tracker.wait()
    return out


def test_a_new_face_joins_at_the_frame_after_the_periodic_detection():
    det = FrameCountingDetector(b_from=15)
    seen = _run(Tracker(det, TrackingConfig(detect_every=10)), 26)
    assert det.seen == [0, 10, 20]                     # detected when nothing was tracked, then every 10 frames
    assert seen[0] == (1, {0})                         # the first face: found and landmarked in its own frame
    assert all(seen[i][0] == 1 for i in range(1, 21))  # frame 10's detection saw no new face
    assert seen[21] == (2, {1})                        # face B, found in frame 20, tracked from frame 21
    assert all(seen[i] == (2, set()) for i in range(22, 26))


def test_the_same_file_gives_the_same_tracks_however_slow_the_detector():
    fast = _run(Tracker(FrameCountingDetector(15, 0.0), TrackingConfig(detect_every=10)), 26)
    slow = _run(Tracker(FrameCountingDetector(15, 0.08), TrackingConfig(detect_every=10)), 26)
    assert fast == slow


def test_a_background_detector_error_reaches_the_tracking_thread():
    class FailsLater(FrameCountingDetector):
        def __call__(self, image):
            if int(image[0, 0, 0]) >= 10:
                raise RuntimeError("detector failed")
            return super().__call__(image)

    tracker = Tracker(FailsLater(b_from=99), TrackingConfig(detect_every=10))
    with pytest.raises(RuntimeError, match="detector failed"):
        _run(tracker, 20)


def test_boxes_likely_kept_extrapolates_each_face_one_step():
    """A still face keeps its box; a face stepping 2 % of its side a frame keeps it for one frame after each
    move and then leaves the 3 % hysteresis; the prediction says which."""
    tracker = Tracker(lambda image: [FACE_A], TrackingConfig(detect_every=1000, box_hysteresis=0.03))
    image = np.zeros((480, 640, 3), np.uint8)
    predicted, kept = [], []
    for i in range(12):
        ids, boxes, _ = tracker.boxes(image, i)
        predicted.append(tracker.boxes_likely_kept())
        step = 0.02 * 80 * i if i >= 4 else 0.0            # still for 4 frames, then 2 % of the 80 px side a frame
        tracker.update(ids, [_square(FaceBox(FACE_A.center_px + [step, 0.0], 100.0))])
        kept.append(tracker.tracks[ids[0]].box is boxes[0])
    assert predicted[:2] == [False, False]                  # a new face has no step yet
    assert predicted[2:4] == [True, True] and kept[2:4] == [True, True]
    assert predicted[6:] == kept[6:] and True in kept[6:] and False in kept[6:]   # steady motion: foreseen frame by frame


def test_crop_box_keeps_a_real_face_and_resists_wild_points(data_300w):
    """The next crop comes from the nearest plausible face: on annotated faces it is their own square,
    and three jaw points thrown a quarter of the face outwards move it less than half as far as they
    move the points' square."""
    from models.data import load_faces
    from models.landmarkers import box_change, crop_box
    rng = np.random.default_rng(0)
    clean, raw, ours = [], [], []
    for f in load_faces(data_300w, "test")[:100]:
        pts = f.landmarks_px.astype(np.float64)
        square = FaceBox.from_landmarks(pts)
        clean.append(box_change(square, crop_box(pts)))
        wild = pts.copy()
        jaw = rng.choice(17, 3, replace=False)
        out = wild[jaw] - square.center_px
        wild[jaw] += 0.25 * square.side_px * out / np.linalg.norm(out, axis=1, keepdims=True)
        raw.append(box_change(square, FaceBox.from_landmarks(wild)))
        ours.append(box_change(square, crop_box(wild)))
    assert max(clean) < 0.03, max(clean)
    assert np.median(ours) < 0.5 * np.median(raw), (np.median(ours), np.median(raw))
    # another scheme (MediaPipe's 478 points) keeps its points' own square
    mesh = rng.uniform(100, 200, (478, 2))
    assert box_change(FaceBox.from_landmarks(mesh), crop_box(mesh)) == 0
