"""A trained network narrowed into a cheaper one, its readers fitted again by least squares.

Four settings can be narrowed (NARROWED): the first conv's kernel (model.stem_kernel), each stack's
feature width (model.feature_channels), and the ROI head's channels and window (model.roi_channels,
model.roi_radius). A narrowed layer keeps the channels that carry the most (their spread on training
crops times the weight its readers give them); every layer that reads a narrowed input is then fitted
again, by ridge regression, to give what the trained network's layer gave on the same crops. Its
outputs then start near the trained network's, where keeping channels alone starts far off.

`fast` (300-W common, ground-truth boxes, 3.15), narrowed with no training: a 5x5 first kernel 3.14,
3x3 3.23, the ROI head on 16 channels and a 3x3 window 3.48, the features on 64 channels 3.63.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.network import HIHNet, NetworkConfig, build_network

NARROWED = ("stem_kernel", "feature_channels", "roi_channels", "roi_radius")
RIDGE = 1e-4    # ridge strength, relative to the inputs' mean variance: keeps near-collinear inputs finite


def narrow(trained: HIHNet, cfg: NetworkConfig, crops: Iterable[torch.Tensor]) -> HIHNet:
    """`trained` as the network `cfg`, which may differ from its own only in NARROWED, no wider.
    crops: batches (B,3,S,S) of normalised training crops (models.data.make_batch), read once per fit."""
    src = trained.cfg
    other = [f.name for f in fields(NetworkConfig) if f.name not in NARROWED and getattr(src, f.name) != getattr(cfg, f.name)]
    if other:
        raise ValueError(f"narrow changes only {', '.join(NARROWED)}; these differ too: {', '.join(other)}")
    width = lambda c: c.feature_channels or c.channels  # noqa: E731
    if cfg.stem_kernel > src.stem_kernel or width(cfg) > width(src) or cfg.roi_channels > src.roi_channels \
            or cfg.roi_radius > src.roi_radius:
        raise ValueError("narrow makes a network narrower, not wider")
    crops = list(crops)
    teacher = trained.eval()
    net = build_network(cfg).eval()
    net.load_state_dict(_start_state(teacher, net))
    with torch.no_grad():
        if cfg.stem_kernel != src.stem_kernel:
            _refit(net, teacher, "pre_conv.0.conv", crops, bn="pre_conv.0.bn")
        if width(cfg) != width(src):
            spread = _output_spread(teacher, [f"hg{i}_lin1" for i in range(cfg.stacks)], crops)
            for i in range(cfg.stacks):
                readers = [f"hg{i}_conv_pred"] + ([f"hg{i}_conv1.conv"] if net._merges(i) else [])
                keep = _strongest(spread[f"hg{i}_lin1"], [_columns(teacher, r) for r in readers], width(cfg))
                _keep_outputs(net.get_submodule(f"hg{i}_lin1"), teacher.get_submodule(f"hg{i}_lin1"), keep)
            for i in range(cfg.stacks):
                _refit(net, teacher, f"hg{i}_conv_pred", crops)
                if net._merges(i):
                    _refit(net, teacher, f"hg{i}_conv1.conv", crops, bn=f"hg{i}_conv1.bn")
        if (cfg.roi_channels, cfg.roi_radius) != (src.roi_channels, src.roi_radius):
            if cfg.decimal_head != "roi":
                raise ValueError("roi_channels and roi_radius narrow the ROI decimal head only")
            if cfg.roi_channels != src.roi_channels:
                reduce = "roi_head.reduce"
                spread = _output_spread(teacher, [reduce], crops)[reduce]
                window = (2 * src.roi_radius + 1) ** 2
                reads = teacher.roi_head.fc1.weight.view(-1, src.roi_channels + 1, window)[:, :-1]   # (hidden, C, P)
                keep = _strongest(spread, [reads.transpose(0, 1).flatten(1).T], cfg.roi_channels)
                _keep_outputs(net.roi_head.reduce, teacher.roi_head.reduce, keep)
            _refit(net, teacher, "roi_head.fc1", crops)
    return net


def _start_state(teacher: nn.Module, net: nn.Module) -> dict[str, torch.Tensor]:
    """The narrowed network's starting weights: the trained network's where the shapes agree, the
    narrowed network's own initialisation elsewhere (refit or kept channels replace them)."""
    mine, theirs = net.state_dict(), teacher.state_dict()
    return {k: (theirs[k].clone() if k in theirs and theirs[k].shape == v.shape else v) for k, v in mine.items()}


def _output_spread(net: nn.Module, names: list[str], crops: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each named module's output channels' standard deviation over the crops: {name: (C,)}."""
    sums: dict[str, list] = {n: [0, 0.0, 0.0] for n in names}

    def hook(name):
        def record(_m, _inp, out):
            x = out.transpose(0, 1).flatten(1).double()          # (C, B*H*W)
            s = sums[name]
            s[0] += x.shape[1]
            s[1] = s[1] + x.sum(1)
            s[2] = s[2] + (x * x).sum(1)
        return record
    handles = [net.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        for x in crops:
            net(x)
    finally:
        for h in handles:
            h.remove()
    return {n: (s[2] / s[0] - (s[1] / s[0]) ** 2).clamp_min(0).sqrt().float() for n, s in sums.items()}


def _columns(net: nn.Module, name: str) -> torch.Tensor:
    """A reader's weights as (out, in): a 1x1 conv's or a linear layer's."""
    return net.get_submodule(name).weight.flatten(1)


def _strongest(spread: torch.Tensor, readers: list[torch.Tensor], n: int) -> torch.Tensor:
    """Indices (sorted) of the n channels whose spread times the share of each reader's weight on them
    (summed over readers, each reader's weights normalised) is largest."""
    weight = sum(w.norm(dim=0) / w.norm() for w in readers)
    return (spread * weight).topk(n).indices.sort().values


def _keep_outputs(new: nn.Module, old: nn.Module, keep: torch.Tensor) -> None:
    """A ConvBNReLU `new` made of `old`'s output channels `keep`."""
    new.conv.weight.copy_(old.conv.weight[keep])
    for key in ("weight", "bias", "running_mean", "running_var"):
        getattr(new.bn, key).copy_(getattr(old.bn, key)[keep])


def _refit(net: nn.Module, teacher: nn.Module, name: str, crops: list[torch.Tensor], bn: str | None = None) -> None:
    """Fit `net`'s layer `name` (a conv or a linear layer) so that on `net`'s own inputs to it it gives
    what `teacher`'s layer of that name gave on the same crops. The fit's intercept goes to the layer's
    bias, or, for a conv without one, into the batch norm `bn` that follows it (its running mean)."""
    layer, target_layer = net.get_submodule(name), teacher.get_submodule(name)
    seen: dict[str, torch.Tensor] = {}
    h1 = layer.register_forward_hook(lambda _m, inp, _o: seen.__setitem__("x", _rows_in(layer, inp[0])))
    h2 = target_layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("y", _rows_out(out)))
    n, sx, sy, sxx, sxy = 0, 0.0, 0.0, 0.0, 0.0
    try:
        for x in crops:
            net(x)
            teacher(x)
            a, b = seen["x"].double(), seen["y"].double()
            n += len(a)
            sx, sy = sx + a.sum(0), sy + b.sum(0)
            sxx, sxy = sxx + a.T @ a, sxy + a.T @ b
    finally:
        h1.remove()
        h2.remove()
    mx, my = sx / n, sy / n
    cov = sxx / n - torch.outer(mx, mx)
    cov += RIDGE * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    w = torch.linalg.solve(cov, sxy / n - torch.outer(mx, my)).T            # (out, in)
    intercept = (my - w @ mx).float()
    layer.weight.copy_(w.float().view_as(layer.weight))
    if layer.bias is not None:
        layer.bias.copy_(intercept)
    else:
        net.get_submodule(bn).running_mean.sub_(intercept)


def _rows_in(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as regression rows: a conv's receptive fields (B*L, C*k*k), a linear layer's
    last dimension (N, in)."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)   # (B, C*k*k, L)
        return patches.transpose(1, 2).flatten(0, 1)
    return x.flatten(0, -2)


def _rows_out(y: torch.Tensor) -> torch.Tensor:
    """A layer's output as regression rows: (B,C,H,W) -> (B*H*W, C); (..., out) -> (N, out)."""
    return y.flatten(2).transpose(1, 2).flatten(0, 1) if y.dim() == 4 else y.flatten(0, -2)


__all__ = ["NARROWED", "narrow"]
