"""Face profiling (models.profiling) on analytic surfaces with known answers, and once on real faces."""
import math

import cv2
import numpy as np
import pytest
from scipy.spatial import Delaunay

from models import crop
from models import profiling as P
from models.data import CacheSpec, load_cache, load_faces

SPEC = CacheSpec(side_px=256, box_scale=1.8)


def _dome(radius_px=60.0, centre=(128.0, 128.0), bulge=0.6) -> P.Surface:
    """An analytic face: a spherical cap over a disc, bulging towards the camera (z < 0 in front)."""
    rings = [np.array([[0.0, 0.0]])]
    for r in np.linspace(0.15, 1.0, 8):
        a = np.linspace(0, 2 * np.pi, int(12 + 40 * r), endpoint=False)
        rings.append(np.stack([np.cos(a), np.sin(a)], 1) * r)
    xy = np.concatenate(rings)
    z = -bulge * radius_px * np.sqrt(np.clip(1 - (xy ** 2).sum(1), 0, 1))
    v = np.concatenate([xy * radius_px + centre, z[:, None]], 1)
    tris = Delaunay(xy).simplices.astype(np.int32)
    outline = np.arange(len(xy) - len(rings[-1]), len(xy))
    return P.Surface(v, tris, outline, np.array([*centre, 0.0]), 0.0)


def _face_points(s: P.Surface, rng) -> np.ndarray:
    """68 points on the dome: the jaw on the lower outline, the rest inside, eyes level."""
    c, r = s.centre[:2], 60.0
    a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)                 # image left to right along the bottom
    jaw = c + np.stack([np.cos(a), np.sin(a)], 1) * r * 0.999
    inner = c + rng.uniform(-0.5, 0.5, (51, 2)) * r
    pts = np.concatenate([jaw, inner])
    pts[36], pts[45] = c + [-0.45 * r, -0.2 * r], c + [0.45 * r, -0.2 * r]
    return pts


def _gradient_image(side=256) -> np.ndarray:
    ys, xs = np.mgrid[0:side, 0:side]
    return np.stack([xs, ys, (xs + ys) // 2], -1).astype(np.uint8)


def _view(s, pts, yaw, pitch=0.0, image=None):
    anchors = P.background_anchors(s, SPEC.side_px)
    p3 = P.lift_points(s, pts)
    return P.profile_view(image if image is not None else _gradient_image(), s, anchors, p3, p3[:2], P.ViewPlan(yaw, pitch), SPEC), p3


def test_at_zero_degrees_the_points_are_the_originals():
    s = _dome()
    pts = _face_points(s, np.random.default_rng(0))
    view, _ = _view(s, pts, 0.0)
    # the output crop is the cache crop around the same points: map the originals into it
    m = crop.similarity(*crop.square_box(pts, SPEC.box_scale), SPEC.side_px)
    assert np.abs(view.landmarks_px - crop.transform_points(m, pts)).max() < 0.01


def test_lifted_points_lie_on_the_surface():
    s = _dome()
    pts = _face_points(s, np.random.default_rng(1))[17:]
    p3 = P.lift_points(s, pts)
    r2 = ((pts - s.centre[:2]) ** 2).sum(1) / 60.0 ** 2
    analytic = -0.6 * 60.0 * np.sqrt(1 - r2)
    assert np.abs(p3[:, 2] - analytic).max() < 0.02 * 60      # piecewise-flat triangles under a sphere


@pytest.mark.parametrize("yaw,pitch", [(30.0, 0.0), (-45.0, 5.0), (60.0, -8.0)])
def test_rotated_points_land_where_the_projection_says(yaw, pitch):
    s = _dome()
    pts = _face_points(s, np.random.default_rng(2))
    view, p3 = _view(s, pts, yaw, pitch)
    r = P.rotation(yaw, pitch)
    expected3 = (p3 - s.centre) @ r.T + s.centre
    m = crop.similarity(*crop.square_box(expected3[:, :2], SPEC.box_scale), SPEC.side_px)
    expected = crop.transform_points(m, expected3[:, :2])
    # hand check of one point against the closed form of a yaw rotation (pitch 0 case)
    if pitch == 0:
        x, z = p3[30, 0] - s.centre[0], p3[30, 2] - s.centre[2]
        th = math.radians(yaw)
        assert abs(expected3[30, 0] - (s.centre[0] + x * math.cos(th) + z * math.sin(th))) < 1e-9
    inner = slice(17, 68)                                     # the jaw may be marched: tested below
    assert np.abs(view.landmarks_px[inner] - expected[inner]).max() < 0.01


def test_texture_moves_with_the_points():
    """The colour under each visible transported point is the colour under the original point."""
    s = _dome()
    pts = _face_points(s, np.random.default_rng(3))
    image = _gradient_image()
    view, _ = _view(s, pts, 25.0, image=image)
    front = [k for k in range(17, 68) if np.linalg.norm(pts[k] - s.centre[:2]) < 25]   # not self-occluded at 25 deg
    for k in front:
        x, y = view.landmarks_px[k]
        got = view.image[int(round(y)), int(round(x))].astype(float)
        want = image[int(round(pts[k, 1])), int(round(pts[k, 0]))].astype(float)
        assert np.abs(got - want).max() <= 3, (k, got, want)


def test_marched_jaw_points_lie_on_the_face_boundary():
    s = _dome()
    pts = _face_points(s, np.random.default_rng(4))
    yaw = 50.0
    view, p3 = _view(s, pts, yaw)
    mask = view.face_mask
    far = P.far_jaw((p3 - s.centre) @ P.rotation(yaw, 0).T)
    boundary = mask.astype(np.uint8) - cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    dist = cv2.distanceTransform((1 - boundary).astype(np.uint8), cv2.DIST_L2, 5)
    for k in far:
        x, y = view.landmarks_px[k]
        assert dist[int(round(y)), int(round(x))] <= 1.5, (k, dist[int(round(y)), int(round(x))])
    # they were moved: the hidden jaw's own projection lies inside the face, away from its edge
    r3 = (p3 - s.centre) @ P.rotation(yaw, 0).T + s.centre
    m = crop.similarity(*crop.square_box(r3[:, :2], SPEC.box_scale), SPEC.side_px)
    hidden = crop.transform_points(m, r3[list(far), :2])
    assert np.abs(hidden - view.landmarks_px[list(far)]).max() > 3


def test_far_jaw_points_are_spaced_evenly_from_the_chin():
    """Annotators space the contour evenly along what is seen of it; the marched far side is too."""
    s = _dome()
    pts = _face_points(s, np.random.default_rng(4))
    view, p3 = _view(s, pts, 50.0)
    far = P.far_jaw((p3 - s.centre) @ P.rotation(50.0, 0).T)
    steps = np.linalg.norm(np.diff(view.landmarks_px[[P.CHIN, *far]], axis=0), axis=1)
    assert steps.max() / steps.min() < 1.3, steps          # marched straight across: 1.5-1.7


def test_space_evenly_keeps_the_ends_and_the_line():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 8.0], [5.0, 5.0]])
    out = P.space_evenly(pts, (0, 1, 2, 3, 4))             # an L of length 18: steps of 4.5
    assert np.allclose(out[[0, 4, 5]], pts[[0, 4, 5]])
    assert np.allclose(out[1:4], [[4.5, 0.0], [9.0, 0.0], [10.0, 3.5]])


def test_march_jaw_stops_at_the_mask_edge_from_both_sides():
    mask = np.zeros((100, 100), bool)
    cv2.circle(mask.view(np.uint8), (50, 50), 30, 1, -1)
    pts = np.array([[40.0, 50.0], [95.0, 50.0]])
    out = P.march_jaw(pts, (0, 1), mask, np.array([1.0, 0.0]))
    assert abs(out[0, 0] - 80) <= 1 and abs(out[1, 0] - 80) <= 1      # out from inside, in from outside


def test_plan_turns_away_from_frontal_up_to_75_degrees():
    rng = np.random.default_rng(0)
    frontal = P.plan_views(2.0, rng)
    assert {math.copysign(1, p.yaw_deg) for p in frontal} == {1.0, -1.0}
    turned = P.plan_views(-20.0, rng)
    assert all(p.yaw_deg < -20 for p in turned) and min(p.yaw_deg for p in turned) >= -75
    assert all(abs(p.pitch_deg) <= 10 for p in frontal + turned)


def test_mesh_triangles_of_an_edge_list():
    # a square split in two, plus a spurious cycle through a crowded edge
    edges = {(0, 1), (1, 2), (2, 3), (0, 3), (0, 2)}
    assert sorted(map(tuple, P.mesh_triangles(edges, 4).tolist())) == [(0, 1, 2), (0, 2, 3)]


@pytest.mark.slow
def test_synthesize_real_faces_into_a_training_cache(data_300w, tmp_path):
    faces = load_faces(data_300w, "train")[:4]
    counts = P.synthesize(faces, tmp_path, SPEC, log=lambda *_: None)
    assert counts["views"] >= 8 and counts["skipped_faces"] <= 1
    cache = load_cache(tmp_path)
    assert len(cache) == counts["views"] and cache.images.shape[1:] == (3, 256, 256)
    lm = cache.landmarks.numpy()
    assert ((lm > 0) & (lm < 256)).all()
    again = P.synthesize(faces, tmp_path, SPEC, log=lambda *_: None)       # resumable: nothing is redone
    assert again == counts
    P.contact_sheet(tmp_path, tmp_path / "sheet.png", count=8)
    assert cv2.imread(str(tmp_path / "sheet.png")).shape[0] > 0
