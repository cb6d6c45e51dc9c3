"""Closed eyes made from open ones (models.eyelids): the lid covers the eye in the image, the landmarks
follow the lid, the avatar's blink reads the result, and training keeps both views alike."""
import cv2
import numpy as np
import pytest
import torch

from models.eyelids import close_eye, close_eyes
from stream.expressions import ExpressionEstimator

SKIN, WHITE, IRIS, LASH = (150, 170, 200), (245, 245, 245), (40, 40, 90), (20, 20, 20)


def _drawn_eyes(side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two open eyes drawn on skin (sclera, iris, a dark upper lid line) and 68 points with the
    outlines on them; the rest of the points sit around them, away from the eyes."""
    img = np.full((side, side, 3), SKIN, np.uint8)
    pts = np.zeros((68, 2))
    for eye, cx in ((range(36, 42), 0.33 * side), (range(42, 48), 0.67 * side)):
        cy, rx, ry = 0.45 * side, 0.1 * side, 0.04 * side
        cv2.ellipse(img, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, WHITE, -1)
        cv2.circle(img, (int(cx), int(cy)), int(ry), IRIS, -1)
        cv2.ellipse(img, (int(cx), int(cy)), (int(rx), int(ry)), 0, 180, 360, LASH, 5)   # lashes
        # corners, two upper points, corner, two lower points (iBUG order), on the ellipse
        for i, t in zip(eye, np.radians([180, 240, 300, 0, 60, 120])):
            pts[i] = cx + rx * np.cos(t), cy + ry * np.sin(t)
    rest = [i for i in range(68) if not 36 <= i < 48]
    angles = np.linspace(0, 2 * np.pi, len(rest), endpoint=False)
    pts[rest] = np.stack([0.5 + 0.4 * np.cos(angles), 0.6 + 0.35 * np.sin(angles)], 1) * side
    pts[27:36] = np.stack([np.full(9, 0.5), np.linspace(0.5, 0.65, 9)], 1) * side   # nose between the eyes
    return img, pts


def _white_px(img: np.ndarray, x0: int, x1: int) -> int:
    return int(np.all(img[:, x0:x1] > 230, axis=-1).sum())


def test_amount_zero_changes_nothing():
    img, pts = _drawn_eyes()
    out, moved = close_eye(img, pts, 0, 0.0)
    assert np.array_equal(out, img) and np.array_equal(moved, pts)


def test_a_closed_eye_is_covered_and_its_upper_lid_lies_on_the_lower():
    img, pts = _drawn_eyes()
    out, moved = close_eye(img, pts, 0, 1.0)
    # the first eye's sclera and iris are gone, the second eye's untouched
    assert _white_px(out, 0, 128) < 0.05 * _white_px(img, 0, 128)
    assert np.array_equal(out[:, 128:], img[:, 128:])
    iris = np.all(np.abs(out[96:135, 70:100].astype(int) - IRIS) < 10, axis=-1).sum()
    assert iris < 10
    # the dark lid line has come down onto the lower lid
    lower_y = int(round(pts[40, 1]))
    assert out[lower_y - 1:lower_y + 3, int(pts[40, 0])].min() < 100
    # points: only the upper lid moved, each onto the lower lid below it (the lower lid is the ellipse)
    assert np.array_equal(np.delete(moved, [37, 38], 0), np.delete(pts, [37, 38], 0))
    cx, cy, rx, ry = 0.33 * 256, 0.45 * 256, 0.1 * 256, 0.04 * 256
    for i in (37, 38):
        t = np.arccos((moved[i, 0] - cx) / rx)
        assert moved[i, 1] == pytest.approx(cy + ry * np.sin(t), abs=0.6)         # on the lower half
    # away from the eye nothing changed
    far = np.ones(img.shape[:2], bool)
    far[60:130, 40:130] = False
    assert np.array_equal(out[far], img[far])


def test_the_avatar_blink_reads_the_edit_and_rises_as_the_lid_comes_down():
    img, pts = _drawn_eyes()
    est = ExpressionEstimator()
    blink = lambda p: est.blendshapes(p)      # noqa: E731
    open_ = blink(pts)
    _, shut = close_eye(img, pts, 0, 1.0)
    _, both = close_eye(*close_eye(img, pts, 0, 1.0), 1, 1.0)
    # points 36-41 are the subject's right eye: eyeBlinkRight, rising with the lid
    closing = [blink(close_eye(img, pts, 0, a)[1])["eyeBlinkRight"] for a in (0.0, 0.5, 0.75, 1.0)]
    assert closing[0] < 0.05 and np.all(np.diff(closing) > 0.1) and closing[-1] > 0.9, closing
    assert blink(shut)["eyeBlinkLeft"] == pytest.approx(open_["eyeBlinkLeft"], abs=0.05)    # a wink
    assert min(blink(both)["eyeBlinkLeft"], blink(both)["eyeBlinkRight"]) > 0.8


def test_a_narrow_or_folded_eye_is_left_alone():
    img, pts = _drawn_eyes()
    narrow = pts.copy()
    narrow[39] = narrow[36] + [2.0, 0.0]                  # a profile's far eye, 2 px wide
    assert close_eye(img, narrow, 0, 1.0)[0] is img
    folded = pts.copy()
    folded[[37, 38]] = folded[[38, 37]]                   # upper lid points out of order
    assert close_eye(img, folded, 0, 1.0)[0] is img


def test_close_eyes_on_a_batch_edits_copies_of_the_picked_faces():
    img, pts = _drawn_eyes()
    images = torch.from_numpy(img).permute(2, 0, 1)[None].repeat(8, 1, 1, 1)
    landmarks = torch.from_numpy(pts).float()[None].repeat(8, 1, 1)
    before = images.clone(), landmarks.clone()
    out, moved, picked = close_eyes(images, landmarks, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(images, before[0]) and torch.equal(landmarks, before[1])    # inputs untouched
    assert 0 < int(picked.sum()) < 8
    changed = (moved - landmarks).abs().flatten(1).amax(1) > 0
    assert torch.equal(changed, picked)
    assert torch.equal(out[~picked], images[~picked])
    none = close_eyes(images, landmarks, 0.0, torch.Generator().manual_seed(0))
    assert not none[2].any() and none[0] is images
    turned = landmarks.clone()
    turned[:, 42:48, 0] = turned[:, 42:48, 0].mean() + (turned[:, 42:48, 0] - turned[:, 42:48, 0].mean()) * 0.6
    assert not close_eyes(images, turned, 1.0, torch.Generator().manual_seed(0))[2].any()   # far eye foreshortened


def test_both_views_of_a_training_pair_show_the_same_edited_face():
    """edit_expressions runs before the views are cut: a pair's views differ only by their small
    similarity, their landmarks map onto each other."""
    from models.data import AugmentConfig, FaceCache, edit_expressions, make_view_pair
    img, pts = _drawn_eyes()
    cache = FaceCache(torch.from_numpy(img).permute(2, 0, 1)[None].repeat(4, 1, 1, 1).contiguous(),
                      torch.from_numpy(pts).float()[None].repeat(4, 1, 1), [])
    aug = AugmentConfig(eyes_closed_p=1.0)
    gen = torch.Generator().manual_seed(0)
    edited_cache, idx, edited = edit_expressions(cache, torch.arange(4), aug, gen)
    assert edited.all() and not torch.equal(edited_cache.landmarks, cache.landmarks)
    (_, pa, _), (_, pb, _), a_to_b = make_view_pair(edited_cache, idx, 64, aug, gen, torch.device("cpu"))
    from models.crop import transform_points
    assert torch.allclose(transform_points(a_to_b.double(), pa.double()), pb.double(), atol=1e-3)
    assert edit_expressions(cache, torch.arange(4), AugmentConfig(), gen)[0] is cache
