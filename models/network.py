"""Stacked hourglass + HIH heads (spec: ../shared/docs/hih-spec.md §2).

Module names follow the official HeatmapInHeatmap checkpoint keys (spec §2.5) so that
its released state_dict loads with strict=True when ``keep_unused_skip`` is on.

Shapes (B = batch, K = landmarks, H = heatmap side = input/4, D = decimal side):
    input   (B, 3, 4H, 4H), ImageNet-normalised RGB
    heatmaps (B, S, K, H, H)  one integer heatmap per stack (intermediate supervision)
    decimal  (B, K, D, D)     decimal-heatmap logits, one D x D map per landmark
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class NetworkConfig:
    num_landmarks: int = 68
    input_px: int = 128
    stacks: int = 2
    channels: int = 128          # hourglass width f
    depth: int = 3               # hourglass recursion levels (4 in the paper: 64->4)
    bottleneck: float = 0.5      # a residual's 3x3 width as a fraction of its output (0.5 = the paper's)
    decimal_px: int = 8          # D: each integer cell is split into D x D sub-cells
    decimal_head: Literal["global", "roi"] = "roi"    # "global" = official HIH_head, "roi" = features sampled at the integer peak
    head_channels: int = 128     # target_o of the official head
    roi_channels: int = 32       # feature channels sampled per landmark by the ROI head
    roi_radius: int = 2          # the ROI head reads a (2r+1)^2 window around the integer peak
    roi_hidden: int = 256
    # the integer cell the ROI head reads at: the heatmap's maximum, or the cell nearest its centre of mass
    # within 2 cells of it. A lopsided peak (a point near the crop edge) can put the maximum more than half
    # a cell past the decimal window's reach; the centre of mass sits nearer the point
    peak_cell: Literal["argmax", "centroid"] = "argmax"
    # what the decimal head reads after the last stack: "merged" = the next-stack merge, x + conv1(features)
    # + conv2(heatmap), as if another stack followed; "skip" = x + features, the last hourglass's input and
    # output summed. With no stack to follow, the merge's two 1x1 convs serve the decimal head alone, and
    # they cost 14 % of the `fast` network's multiply-adds
    head_input: Literal["merged", "skip"] = "merged"
    keep_unused_skip: bool = False  # official code builds a dead 1x1 skip in every Residual
    init: Literal["default", "official"] = "default"        # "official" = N(0, 0.001^2) convs; "default" = PyTorch's

    @property
    def heatmap_px(self) -> int:
        return self.input_px // 4


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x, inplace=True) if self.relu else x


class Residual(nn.Module):
    """Post-activation bottleneck: 1x1 -> 3x3 -> 1x1, identity or 1x1 skip, then ReLU."""

    def __init__(self, cin: int, cout: int, keep_unused_skip: bool = False, bottleneck: float = 0.5):
        super().__init__()
        mid = max(1, round(cout * bottleneck))
        self.conv1 = ConvBNReLU(cin, mid, 1)
        self.conv2 = ConvBNReLU(mid, mid, 3)
        self.conv3 = ConvBNReLU(mid, cout, 1, relu=False)
        self.needs_skip = cin != cout
        if self.needs_skip or keep_unused_skip:
            self.skip_layer = ConvBNReLU(cin, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip_layer(x) if self.needs_skip else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + skip, inplace=True)


class Hourglass(nn.Module):
    """Recursive hourglass; level n holds res{n}_1 (skip), res{n}_2 (down), res{n}_3 (up)."""

    def __init__(self, depth: int, channels: int, keep_unused_skip: bool = False, bottleneck: float = 0.5):
        super().__init__()
        self.depth = depth
        for n in range(1, depth + 1):
            for j in (1, 2, 3):
                setattr(self, f"res{n}_{j}", Residual(channels, channels, keep_unused_skip, bottleneck))
        self.res_center = Residual(channels, channels, keep_unused_skip, bottleneck)

    def _level(self, x: torch.Tensor, n: int) -> torch.Tensor:
        up = getattr(self, f"res{n}_1")(x)
        low = getattr(self, f"res{n}_2")(F.max_pool2d(x, 2))
        low = self._level(low, n - 1) if n > 1 else self.res_center(low)
        low = getattr(self, f"res{n}_3")(low)
        return up + F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(x, self.depth)


class DownBlock(nn.Module):
    """3x3 s2 -> 3x3, plus a 1x1 s2 shortcut (official Down_Block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, 3, stride=2)
        self.conv2 = ConvBNReLU(channels, channels, 3, relu=False)
        self.downsample = nn.Sequential(ConvBNReLU(channels, channels, 1, stride=2, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.downsample(x), inplace=True)


class DecimalHead(nn.Module):
    """A decimal head: features() is what it reads of the network's map, read() maps that to the decimal
    logits (every landmark's, or with points a few landmarks' again: HIHNet.decimal_at)."""

    def forward(self, feat: torch.Tensor, heatmap: torch.Tensor, peak_cells: torch.Tensor) -> torch.Tensor:
        """feat (B,C,H,W), heatmap (B,K,H,W), peak_cells (B,K,2) integer (x, y) -> (B,K,D,D)."""
        return self.read(self.features(feat), heatmap, peak_cells)


class GlobalDecimalHead(DecimalHead):
    """Official HIH_head: the whole H x H feature map -> K x D x D logits (spec §2.1)."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        c = cfg.head_channels
        self.conv1 = ConvBNReLU(cfg.channels, c, 1)
        n_down = int(math.log2(cfg.heatmap_px // cfg.decimal_px)) - 1
        self.down_ops = nn.Sequential(*[DownBlock(c) for _ in range(n_down)])
        self.head = nn.Sequential(ConvBNReLU(c, c, 1), nn.Conv2d(c, cfg.num_landmarks, 1))
        self.decimal_px = cfg.decimal_px

    def features(self, feat: torch.Tensor) -> torch.Tensor:
        """What the head reads: the whole map itself."""
        return feat

    def read(self, feat: torch.Tensor, heatmap: torch.Tensor, peak_cells: torch.Tensor,
             points: torch.Tensor | None = None) -> torch.Tensor:
        """feat (B,C,H,W) -> (B,K,D,D), every landmark at once (heatmap and peak_cells unused)."""
        if points is not None:
            raise ValueError("the global decimal head maps every landmark at once; reading a few needs decimal_head: roi")
        x = F.max_pool2d(self.conv1(feat), 3, 2)
        x = self.head(self.down_ops(x))
        # MaxPool(3,2) + stride-2 blocks land on D (e.g. 64->31->16->8); resize guards odd sizes.
        if x.shape[-1] != self.decimal_px:
            x = F.interpolate(x, size=(self.decimal_px,) * 2, mode="bilinear", align_corners=False)
        return x


class RoiDecimalHead(DecimalHead):
    """Decimal head that reads features *at* each landmark's integer peak (our departure).

    For landmark k at integer cell (ix, iy) it gathers a (2r+1)^2 window of reduced features
    and of heatmap k itself, and maps it with a shared MLP (+ a per-landmark embedding) to
    D x D logits. The official head must find the sub-cell signal of 68 points in a global,
    spatially pooled map; here the network only has to read the local blob shape.
    """

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.reduce = ConvBNReLU(cfg.channels, cfg.roi_channels, 1)
        self.radius = cfg.roi_radius
        window = (2 * cfg.roi_radius + 1) ** 2
        self.embed = nn.Parameter(torch.zeros(cfg.num_landmarks, cfg.roi_hidden))
        self.fc1 = nn.Linear((cfg.roi_channels + 1) * window, cfg.roi_hidden)
        self.fc2 = nn.Linear(cfg.roi_hidden, cfg.decimal_px ** 2)
        self.decimal_px = cfg.decimal_px

    def features(self, feat: torch.Tensor) -> torch.Tensor:
        """What the head reads: (B,C,H,W) -> the reduced map (B,c,H,W)."""
        return self.reduce(feat)

    def read(self, feat: torch.Tensor, heatmap: torch.Tensor, peak_cells: torch.Tensor,
             points: torch.Tensor | None = None) -> torch.Tensor:
        """forward from features() (B,c,H,W); with points (B,M) landmark indices, peak_cells
        (B,M,2) are theirs and the maps (B,M,D,D) too (a second read of a few points)."""
        embed = self.embed
        if points is not None:
            heatmap = heatmap.gather(1, points[..., None, None].expand(-1, -1, *heatmap.shape[-2:]))
            embed = self.embed[points]
        b, k, h, w = heatmap.shape
        _, _, inside, flat = cell_window(peak_cells, self.radius, h, w)           # (B,K,P)
        # features: gather each landmark's window from the shared map
        f = feat.flatten(2)                                                       # (B,C,HW)
        idx = flat.flatten(1)[:, None, :].expand(-1, f.shape[1], -1)              # (B,C,K*P)
        fw = torch.gather(f, 2, idx).view(b, f.shape[1], k, -1).permute(0, 2, 1, 3)  # (B,K,C,P)
        hw = torch.gather(heatmap.flatten(2), 2, flat)[:, :, None, :]             # (B,K,1,P)
        win = torch.cat([fw, hw], dim=2) * inside[:, :, None, :].to(fw.dtype)
        x = F.relu(self.fc1(win.flatten(2)) + embed, inplace=True)
        return self.fc2(x).view(b, k, self.decimal_px, self.decimal_px)


DECIMAL_HEADS = {"global": GlobalDecimalHead, "roi": RoiDecimalHead}


class HIHNet(nn.Module):
    """Stacked hourglass with an integer heatmap per stack and one decimal head."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.cfg = cfg
        f, k, skip, b = cfg.channels, cfg.num_landmarks, cfg.keep_unused_skip, cfg.bottleneck
        self.pre_conv = nn.Sequential(
            ConvBNReLU(3, f // 4, 7, stride=2),
            Residual(f // 4, f // 2, skip, b),
            nn.MaxPool2d(2, 2),
            Residual(f // 2, f // 2, skip, b),
            Residual(f // 2, f, skip, b),
        )
        for i in range(cfg.stacks):
            setattr(self, f"hg{i}", Hourglass(cfg.depth, f, skip, b))
            setattr(self, f"hg{i}_res1", Residual(f, f, skip, b))
            setattr(self, f"hg{i}_lin1", ConvBNReLU(f, f, 1))
            setattr(self, f"hg{i}_conv_pred", nn.Conv2d(f, k, 1))
            if self._merges(i):
                setattr(self, f"hg{i}_conv1", ConvBNReLU(f, f, 1))
                setattr(self, f"hg{i}_conv2", ConvBNReLU(k, f, 1))
        head = DECIMAL_HEADS[cfg.decimal_head](cfg)
        # official key prefix for the global head; the ROI head has its own name
        setattr(self, "offset_head" if cfg.decimal_head == "global" else "roi_head", head)
        self._head_name = "offset_head" if cfg.decimal_head == "global" else "roi_head"
        if cfg.init == "official":
            self.apply(_official_init)

    @property
    def decimal_head(self) -> nn.Module:
        return getattr(self, self._head_name)

    def _merges(self, stack: int) -> bool:
        """Whether stack `stack` ends in the merge convs (every stack but a last one read by "skip")."""
        return stack < self.cfg.stacks - 1 or self.cfg.head_input == "merged"

    def forward(self, x: torch.Tensor, peak_cells: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x (B,3,4H,4H) -> {"heatmaps": (B,S,K,H,H), "decimal": (B,K,D,D), "peak_cells": (B,K,2),
        "features": what the decimal head reads (decimal_at reads it again)}.

        peak_cells: integer cell per landmark the decimal map refines; by default the last stack's
        heatmap's cell chosen by `cfg.peak_cell` (what the decoder uses), detached.
        """
        x = self.pre_conv(x)
        heatmaps = []
        for i in range(self.cfg.stacks):
            feat = getattr(self, f"hg{i}_lin1")(getattr(self, f"hg{i}_res1")(getattr(self, f"hg{i}")(x)))
            pred = getattr(self, f"hg{i}_conv_pred")(feat)
            heatmaps.append(pred)
            if self._merges(i):
                x = x + getattr(self, f"hg{i}_conv1")(feat) + getattr(self, f"hg{i}_conv2")(pred)
            else:
                x = x + feat
        last = heatmaps[-1]
        if peak_cells is None:
            peak_cells = PEAK_CELLS[self.cfg.peak_cell](last.detach())
        # what the head reads stays in the outputs, for decimal_at
        features = self.decimal_head.features(x)
        decimal = self.decimal_head.read(features, last.detach(), peak_cells)
        return {"heatmaps": torch.stack(heatmaps, 1), "decimal": decimal, "peak_cells": peak_cells, "features": features}

    def decimal_at(self, outputs: dict[str, torch.Tensor], cells: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The decimal maps (B,M,D,D) of landmarks `points` (B,M) read at `cells` (B,M,2), from a forward's
        outputs (the ROI head)."""
        return self.decimal_head.read(outputs["features"], outputs["heatmaps"][:, -1].detach(), cells, points)


def slim(trained: HIHNet, cfg: NetworkConfig) -> HIHNet:
    """A network with narrower residual bottlenecks (cfg.bottleneck), started from a trained one:
    each residual keeps the 3x3-path channels that carry the most (network slimming: |BN scale|
    times the norm of the weights that read the channel), everything else is copied as it is.
    A short fine-tune then recovers most of the accuracy at a fraction of the 3x3 cost."""
    net = build_network(cfg)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    for name, old in trained.named_modules():
        if not isinstance(old, Residual):
            continue
        new = net.get_submodule(name)
        keep1 = _strongest(old.conv1.bn, old.conv2.conv.weight, new.conv1.conv.out_channels)
        keep2 = _strongest(old.conv2.bn, old.conv3.conv.weight, new.conv2.conv.out_channels)
        # conv1 loses output channels, conv2 inputs and outputs, conv3 inputs
        for conv, rows, cols in (("conv1", keep1, None), ("conv2", keep2, keep1), ("conv3", None, keep2)):
            layer = getattr(old, conv)
            w = layer.conv.weight if rows is None else layer.conv.weight[rows]
            state[f"{name}.{conv}.conv.weight"] = (w if cols is None else w[:, cols]).clone()
            if rows is not None:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    state[f"{name}.{conv}.bn.{key}"] = getattr(layer.bn, key)[rows].clone()
    net.load_state_dict(state)
    return net


def _strongest(bn: nn.BatchNorm2d, next_weight: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (sorted) of the n channels with the largest |BN scale| x L2 norm of the next conv's
    weights (out, in, kh, kw) that read them."""
    reads = next_weight.transpose(0, 1).flatten(1).norm(dim=1)
    score = bn.weight.detach().abs() * reads.detach()
    return score.topk(n).indices.sort().values


def heatmap_argmax(heatmap: torch.Tensor) -> torch.Tensor:
    """(B,K,H,W) -> (B,K,2) integer (x, y) of each map's maximum."""
    w = heatmap.shape[-1]
    idx = heatmap.flatten(2).argmax(-1)
    return torch.stack([idx % w, idx // w], dim=-1)


def cell_window(cells: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """(B,K,2) integer (x, y) cells -> the (2r+1)^2 window around each, (B,K,P) apiece: its cells' x and
    y, whether they lie inside the HxW map, and their flat indices into it (clamped at the border)."""
    offsets = torch.arange(-radius, radius + 1, device=cells.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    xs = (cells[..., 0, None, None] + dx).flatten(2)
    ys = (cells[..., 1, None, None] + dy).flatten(2)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    return xs, ys, inside, ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)


def heatmap_centroid_cell(heatmap: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(B,K,H,W) -> (B,K,2) integer (x, y): the cell nearest each map's centre of mass (of its positive
    part) within `radius` cells of its maximum, the codec's refine_centroid rounded. Only that window is
    read (cell_window, as the ROI head reads its own): masking the whole map instead cost 0.12 ms a call."""
    h, w = heatmap.shape[-2:]
    xs, ys, inside, flat = cell_window(heatmap_argmax(heatmap), radius, h, w)
    mass = torch.gather(heatmap.flatten(2), 2, flat).clamp_min(0) * inside.to(heatmap.dtype)
    total = mass.sum(-1).clamp_min(1e-12)
    cx = (mass * xs.to(heatmap.dtype)).sum(-1) / total
    cy = (mass * ys.to(heatmap.dtype)).sum(-1) / total
    return torch.stack([torch.round(cx).long().clamp(0, w - 1), torch.round(cy).long().clamp(0, h - 1)], -1)


PEAK_CELLS = {"argmax": heatmap_argmax, "centroid": heatmap_centroid_cell}


def _official_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(m.weight, std=0.001)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_network(cfg: NetworkConfig | dict) -> HIHNet:
    if isinstance(cfg, dict):
        cfg = NetworkConfig(**cfg)
    return HIHNet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["NetworkConfig", "HIHNet", "build_network", "slim", "heatmap_argmax", "count_params"]
