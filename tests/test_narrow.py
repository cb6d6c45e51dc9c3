"""models.narrow: a narrowed network starts from the trained one's outputs. Where the narrowed-away parts
carried nothing, it gives them back exactly: the kept channels are the ones that carry the signal, and
every reader's refit recovers the trained weights from the crops alone."""
from dataclasses import replace

import pytest
import torch

from models.narrow import narrow
from models.network import HIHNet, NetworkConfig, build_network

CFG = NetworkConfig(num_landmarks=5, input_px=32, channels=16, depth=1, roi_channels=8, roi_hidden=16, peak_cell="centroid")


def _trained(cfg: NetworkConfig) -> HIHNet:
    """A network with random weights, its batch-norm shifts positive so that every channel carries signal,
    and their statistics measured on random crops as training would (eval mode)."""
    torch.manual_seed(0)
    net = build_network(cfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.2, 0.6)
                m.momentum = None      # the running statistics become the plain average over the crops
        for x in _crops(2):
            net(x)
    return net.eval()


def _crops(batches: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(16, 3, CFG.input_px, CFG.input_px, generator=gen) for _ in range(batches)]


def _outputs(net: HIHNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = net(x)
    return out["heatmaps"], out["decimal"]


def test_narrowing_to_the_same_network_changes_nothing():
    net = _trained(CFG)
    x = _crops(1)[0]
    for a, b in zip(_outputs(net, x), _outputs(narrow(net, CFG, _crops()), x)):
        assert torch.equal(a, b)


def test_what_carried_nothing_is_narrowed_away_and_the_rest_refit_exactly():
    """A 7x7 first kernel that is a 3x3 one padded, half of each stack's features and half the ROI channels
    read by nobody, a decimal head that reads only its window's inner 3x3: narrowed to exactly that, the network
    gives the trained one's heatmaps and decimal maps."""
    net = _trained(CFG)
    unread = torch.arange(0, CFG.channels, 2)                 # every other feature channel: not contiguous
    unread_roi = torch.tensor([0, 3, 5, 6])
    with torch.no_grad():
        stem = net.pre_conv[0].conv.weight
        inner = torch.zeros_like(stem)
        inner[..., 2:5, 2:5] = stem[..., 2:5, 2:5]
        stem.copy_(inner)
        for i in range(CFG.stacks):
            net.get_submodule(f"hg{i}_conv_pred").weight[:, unread] = 0
            net.get_submodule(f"hg{i}_conv1").conv.weight[:, unread] = 0
        fc1 = net.roi_head.fc1.weight.view(CFG.roi_hidden, CFG.roi_channels + 1, 5, 5)
        fc1[:, unread_roi] = 0
        ring = torch.ones(5, 5, dtype=torch.bool)
        ring[1:4, 1:4] = False
        fc1[..., ring] = 0
    small = replace(CFG, stem_kernel=3, feature_channels=CFG.channels // 2, roi_channels=4, roi_radius=1)
    narrowed = narrow(net, small, _crops())
    assert narrowed.hg0_conv_pred.weight.shape[1] == CFG.channels // 2
    x = _crops(1)[0] * 0.8
    for want, got in zip(_outputs(net, x), _outputs(narrowed, x)):
        assert torch.allclose(got, want, atol=2e-3 * want.abs().max()), (got - want).abs().max()


def test_keeping_channels_without_the_refit_would_not_do():
    """The refit is what brings the narrowed network back: on a network whose every part carries signal,
    the refit readers' heatmaps are nearer the trained ones than those of the readers' own kept columns."""
    one = replace(CFG, stacks=1)
    net = _trained(one)
    small = replace(one, feature_channels=one.channels // 2)
    narrowed = narrow(net, small, _crops())
    unfit = build_network(small).eval()
    unfit.load_state_dict(narrowed.state_dict())
    keep = [i for i in range(one.channels)
            if any(torch.equal(net.hg0_lin1.conv.weight[i], w) for w in narrowed.hg0_lin1.conv.weight)]
    with torch.no_grad():
        unfit.hg0_conv_pred.weight.copy_(net.hg0_conv_pred.weight[:, keep])
        unfit.hg0_conv_pred.bias.copy_(net.hg0_conv_pred.bias)
        unfit.hg0_conv1.conv.weight.copy_(net.hg0_conv1.conv.weight[:, keep])
        unfit.hg0_conv1.bn.running_mean.copy_(net.hg0_conv1.bn.running_mean)
    x = _crops(1)[0]
    want = _outputs(net, x)[0]
    assert (_outputs(narrowed, x)[0] - want).pow(2).mean() < 0.5 * (_outputs(unfit, x)[0] - want).pow(2).mean()


@pytest.mark.parametrize("change", [dict(roi_radius=3), dict(feature_channels=32), dict(depth=2)])
def test_narrow_refuses_what_is_not_a_narrowing(change):
    with pytest.raises(ValueError):
        narrow(_trained(CFG), replace(CFG, **change), _crops(1))
