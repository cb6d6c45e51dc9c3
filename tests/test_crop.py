"""Crop transforms: exact round trips and cv2 / torch agreement."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import crop


@given(st.floats(50, 600), st.floats(50, 400), st.floats(20, 400), st.floats(-3.1, 3.1), st.booleans())
@settings(max_examples=60, deadline=None)
def test_round_trip_is_exact(cx, cy, side, angle, flip):
    m = crop.similarity(np.array([cx, cy]), side, 128, angle, flip)
    pts = np.random.default_rng(0).uniform(0, 640, (20, 2))
    back = crop.transform_points(crop.invert(m), crop.transform_points(m, pts))
    assert np.abs(back - pts).max() < 1e-6


def test_box_centre_maps_to_crop_centre():
    m = crop.similarity(np.array([100.0, 80.0]), 64, 128)
    assert np.allclose(crop.transform_points(m, np.array([[100.0, 80.0]])), [[63.5, 63.5]])


def test_warp_puts_a_pixel_where_the_matrix_says():
    """A bright pixel at image (x, y) appears at M @ (x, y) in the crop: no half-pixel shift."""
    img = np.zeros((200, 200, 3), np.uint8)
    img[70, 90] = 255
    m = crop.similarity(np.array([100.5, 100.5]), 100, 100)   # scale 1, integer offset
    out = crop.warp(img, m, 100)
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert np.allclose(crop.transform_points(m, np.array([[90.0, 70.0]]))[0], [x, y])


def test_torch_warp_matches_cv2():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img, 2, 0), 2, 1))  # smooth-ish: 240x320
    m = crop.similarity(np.array([150.0, 110.0]), 90, 64, 0.3)
    ref = crop.warp(img, m, 64).astype(np.float32)
    t = crop.warp_batch(torch.from_numpy(img).permute(2, 0, 1)[None].float(), torch.from_numpy(m)[None].float(), 64)
    got = t[0].permute(1, 2, 0).numpy()
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(got[inner] - ref[inner]).mean() < 1.0


def test_warp_many_matches_one_crop_at_a_time():
    """The GPU crop path (one frame, many faces, one grid_sample over stacked grids) gives each face
    the crop warp_batch/cv2 give it alone."""
    rng = np.random.default_rng(2)
    img = torch.from_numpy(rng.integers(0, 255, (3, 200, 300)).astype(np.float32))
    ms = torch.from_numpy(np.stack([crop.similarity(np.array([60.0 + 70 * i, 90.0 + 5 * i]), 80 + 10 * i, 32, 0.2 * i)
                                    for i in range(4)])).float()
    many = crop.warp_many(img, ms, 32)
    assert many.shape == (4, 3, 32, 32)
    for i in range(4):
        one = crop.warp_batch(img[None], ms[i:i + 1], 32)[0]
        assert torch.allclose(many[i], one, atol=1e-3)
