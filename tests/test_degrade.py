"""Occluders and camera degradations (models.degrade): each changes what it should and nothing else."""
import numpy as np
import pytest
import torch

from models import degrade as G
from models.data import AugmentConfig


def _batch(b=6, side=128, seed=0):
    """Faces as smooth colour ramps with 68 points spread over the middle of the crop."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    x = torch.stack([xs, ys, 1 - xs], 0)[None].repeat(b, 1, 1, 1) * (0.5 + 0.5 * torch.rand(b, 1, 1, 1, generator=g))
    rng = np.random.default_rng(seed)
    pts = torch.from_numpy(rng.uniform(0.3, 0.7, (b, 68, 2)) * side).float()
    pts[:, 36], pts[:, 45] = torch.tensor([0.35 * side, 0.4 * side]), torch.tensor([0.65 * side, 0.4 * side])
    return x, pts


@pytest.mark.parametrize("name", sorted(G.OCCLUDERS))
def test_each_occluder_covers_part_of_the_face(name):
    x, pts = _batch()
    rng = np.random.default_rng(0)
    for i in range(len(x)):
        m = G.OCCLUDERS[name](128, pts[i].numpy().astype(np.float64), rng)
        assert m.shape == (128, 128) and 0 <= m.min() and m.max() <= 1
        covered = m.mean()
        assert 0.002 < covered < 0.7, (name, covered)          # something, never the whole crop


def test_occlude_uses_another_faces_texture_and_leaves_the_rest():
    x, pts = _batch()
    gen = torch.Generator().manual_seed(0)
    y = G.occlude(x, pts, 1.0, gen)
    changed = (y - x).abs().amax(1) > 1e-6
    assert changed.flatten(1).any(1).all()                     # every sample got an occluder
    assert (changed.flatten(1).float().mean(1) < 0.8).all()    # and kept most of itself
    assert torch.equal(G.occlude(x, pts, 0.0, gen), x)


def test_motion_blur_and_defocus_keep_the_mean_and_soften_edges():
    x = torch.zeros(4, 3, 64, 64)
    x[:, :, :, 32:] = 1.0                                      # a vertical edge
    gen = torch.Generator().manual_seed(0)
    y = G.blur(x, 0.5, 0.5, gen)
    assert torch.allclose(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.02)
    step = (y[:, 0, 32, 30:35] - x[:, 0, 32, 30:35]).abs().amax(1)
    assert (step > 0).sum() >= 2                               # horizontal-ish kernels smear the edge
    assert torch.equal(G.blur(x, 0.0, 0.0, gen), x)


def test_low_light_darkens_and_adds_noise():
    x, _ = _batch()
    y = G.low_light(x, 1.0, torch.Generator().manual_seed(0))
    assert (y.mean((1, 2, 3)) < 0.6 * x.mean((1, 2, 3))).all()
    smooth = (x[..., 1:] - x[..., :-1]).abs().mean()
    assert (y[..., 1:] - y[..., :-1]).abs().mean() > smooth      # noise: a darker ramp alone would be smoother


def test_jpeg_is_lossy_but_close():
    x, _ = _batch()
    x = x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    y = G.jpeg(x.clamp(0, 1), 1.0, torch.Generator().manual_seed(0))
    err = (y - x.clamp(0, 1)).abs().mean()
    assert 0.002 < err < 0.08


def test_degrade_follows_the_config_probabilities():
    x, pts = _batch()
    off = AugmentConfig()
    assert torch.equal(G.degrade(x, pts, off, torch.Generator().manual_seed(0)), x)
    on = AugmentConfig(real_occluder_p=1.0, motion_blur_p=0.5, defocus_p=0.5, low_light_p=1.0, jpeg_p=1.0)
    y = G.degrade(x, pts, on, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and not torch.equal(y, x)
