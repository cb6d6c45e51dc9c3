"""Target codecs: landmarks in crop pixels <-> heatmaps (in the style of mmpose's codecs).

Geometry (one convention for every codec): a crop pixel u (0-based pixel centre) sits at
heatmap coordinate p = (u + 0.5) / stride in *edge* units, so integer cell i spans [i, i+1).
A blob whose centre is estimated at cell index c (sub-cell) therefore decodes to p = c + 0.5,
whether the target was drawn at floor(p) (HIH) or at the exact point (plain heatmaps).

All codecs take and return torch tensors, batched, so they run on the training/inference
device; landmarks are (B, K, 2) float in crop pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.network import heatmap_argmax


def crop_to_heatmap(landmarks_crop: torch.Tensor, stride: float) -> torch.Tensor:
    return (landmarks_crop + 0.5) / stride


def heatmap_to_crop(p_hm: torch.Tensor, stride: float) -> torch.Tensor:
    return p_hm * stride - 0.5


def gaussian_maps(centres: torch.Tensor, size: int, sigma: float, radius: float) -> torch.Tensor:
    """Unnormalised Gaussians (peak 1) at `centres` (B,K,2) in cell-index coords -> (B,K,size,size).

    Values beyond `radius` cells (per axis) are zero, as with the official pasted kernel.
    """
    grid = torch.arange(size, device=centres.device, dtype=centres.dtype)
    dx = grid[None, None, :] - centres[..., 0:1]                    # (B,K,W)
    dy = grid[None, None, :] - centres[..., 1:2]                    # (B,K,H)
    gx = torch.exp(-dx ** 2 / (2 * sigma ** 2)) * (dx.abs() <= radius)
    gy = torch.exp(-dy ** 2 / (2 * sigma ** 2)) * (dy.abs() <= radius)
    return gy[..., :, None] * gx[..., None, :]


# ---------------------------------------------------------------------------------------------
# Sub-cell refinement of an integer heatmap (all return the blob centre c in cell-index coords)
# ---------------------------------------------------------------------------------------------

def _neighbour(heatmap: torch.Tensor, cells: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Value of heatmap at cells + (dx, dy), clamped at the border; (B,K)."""
    h, w = heatmap.shape[-2:]
    x = (cells[..., 0] + dx).clamp(0, w - 1)
    y = (cells[..., 1] + dy).clamp(0, h - 1)
    return torch.gather(heatmap.flatten(2), 2, (y * w + x)[..., None])[..., 0]


def refine_argmax(heatmap: torch.Tensor) -> torch.Tensor:
    return heatmap_argmax(heatmap).to(heatmap.dtype)


def refine_quarter(heatmap: torch.Tensor) -> torch.Tensor:
    """Argmax shifted a quarter cell towards the larger neighbour (Newell et al.'s trick)."""
    cells = heatmap_argmax(heatmap)
    sx = torch.sign(_neighbour(heatmap, cells, 1, 0) - _neighbour(heatmap, cells, -1, 0))
    sy = torch.sign(_neighbour(heatmap, cells, 0, 1) - _neighbour(heatmap, cells, 0, -1))
    return cells.to(heatmap.dtype) + 0.25 * torch.stack([sx, sy], -1)


def refine_centroid(heatmap: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Centre of mass of the (positive) heatmap in a (2r+1)^2 window around the argmax."""
    cells = heatmap_argmax(heatmap)
    h, w = heatmap.shape[-2:]
    ys = torch.arange(h, device=heatmap.device, dtype=heatmap.dtype)
    xs = torch.arange(w, device=heatmap.device, dtype=heatmap.dtype)
    inx = (xs[None, None, :] - cells[..., 0:1]).abs() <= radius      # (B,K,W)
    iny = (ys[None, None, :] - cells[..., 1:2]).abs() <= radius      # (B,K,H)
    mass = heatmap.clamp_min(0) * (iny[..., :, None] & inx[..., None, :])
    total = mass.sum((-1, -2)).clamp_min(1e-12)
    cx = (mass.sum(-2) * xs).sum(-1) / total
    cy = (mass.sum(-1) * ys).sum(-1) / total
    return torch.stack([cx, cy], -1)


def refine_dark(heatmap: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """DARK (Zhang et al. 2020): Gaussian-smooth, log, one Newton step at the argmax."""
    k = int(3 * sigma) * 2 + 1
    g = torch.exp(-(torch.arange(k, device=heatmap.device, dtype=heatmap.dtype) - k // 2) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    b, n, h, w = heatmap.shape
    hm = heatmap.reshape(b * n, 1, h, w)
    hm = F.conv2d(F.pad(hm, (k // 2,) * 4, mode="replicate"), g.view(1, 1, 1, k))
    hm = F.conv2d(hm, g.view(1, 1, k, 1)).view(b, n, h, w)
    hm = torch.log(hm.clamp_min(1e-10))
    cells = heatmap_argmax(heatmap)
    v = lambda dx, dy: _neighbour(hm, cells, dx, dy)  # noqa: E731 - local shorthand
    dx = 0.5 * (v(1, 0) - v(-1, 0))
    dy = 0.5 * (v(0, 1) - v(0, -1))
    dxx = v(1, 0) - 2 * v(0, 0) + v(-1, 0)
    dyy = v(0, 1) - 2 * v(0, 0) + v(0, -1)
    dxy = 0.25 * (v(1, 1) - v(1, -1) - v(-1, 1) + v(-1, -1))
    det = dxx * dyy - dxy ** 2
    ok = (det.abs() > 1e-8) & (dxx < 0) & (dyy < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = torch.where(ok, -(dyy * dx - dxy * dy) / safe, torch.zeros_like(det)).clamp(-1, 1)
    oy = torch.where(ok, -(dxx * dy - dxy * dx) / safe, torch.zeros_like(det)).clamp(-1, 1)
    return cells.to(heatmap.dtype) + torch.stack([ox, oy], -1)


def refine_softargmax(heatmap: torch.Tensor, beta: float = 20.0) -> torch.Tensor:
    """Integral regression: expectation under softmax(beta * heatmap) over the whole map."""
    b, k, h, w = heatmap.shape
    prob = torch.softmax(beta * heatmap.flatten(2), -1).view(b, k, h, w)
    xs = torch.arange(w, device=heatmap.device, dtype=heatmap.dtype)
    ys = torch.arange(h, device=heatmap.device, dtype=heatmap.dtype)
    return torch.stack([(prob.sum(-2) * xs).sum(-1), (prob.sum(-1) * ys).sum(-1)], -1)


REFINERS = {
    "argmax": refine_argmax,
    "quarter": refine_quarter,
    "centroid": refine_centroid,
    "dark": refine_dark,
    "softargmax": refine_softargmax,
}


def heatmap_confidence(heatmap: torch.Tensor) -> torch.Tensor:
    """Peak value of each map, clipped to [0, 1]: the Gaussian target has peak 1."""
    return heatmap.flatten(2).amax(-1).clamp(0, 1)


@dataclass
class HeatmapCodec:
    """Plain heatmap: Gaussian at the exact sub-pixel point; decoded by a chosen refiner."""

    input_px: int = 128
    heatmap_px: int = 32
    sigma: float = 1.5
    refine: str = "argmax"

    @property
    def stride(self) -> float:
        return self.input_px / self.heatmap_px

    def encode(self, landmarks_crop: torch.Tensor) -> dict[str, torch.Tensor]:
        p = crop_to_heatmap(landmarks_crop, self.stride)
        return {"heatmap": gaussian_maps(p - 0.5, self.heatmap_px, self.sigma, 3 * self.sigma)}

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hm = _last_heatmap(outputs)
        c = REFINERS[self.refine](hm.float())
        return heatmap_to_crop(c + 0.5, self.stride), heatmap_confidence(hm.float())


@dataclass
class HIHCodec:
    """Heatmap In Heatmap: integer map at floor(p) + a D x D decimal map that refines its peak cell.

    The decimal map spans `window_cells` cells centred on the peak cell's centre, i.e. fractions
    [0.5 - W/2, 0.5 + W/2) of a cell measured from the cell's corner. W = 1 is the paper (the map
    lives inside the cell); W = 2 overlaps half of each neighbour, so a point near a cell edge is
    described the same way from either cell and the decode does not jump when the peak flips.

    label = "official": decimal soft label = softmax of a peak-1 Gaussian at round(D * frac)
        (spec §3.2; nearly flat, max/min ratio <= e); decoded as argmax / D. W = 1 only.
    label = "normalized": a proper probability, a Gaussian (dec_sigma bins) at the exact fraction
        over the bin centres, normalised to sum 1.
    decimal_decode = "argmax" | "expectation" | "calibrated": "calibrated" is the expectation
        mapped through the inverse of the label's own expectation curve, so that decoding a label
        gives back exactly the fraction it was made from (plain expectation pulls fractions near
        the window's edges inwards: with W = 1, 0 -> 0.10 and 1 -> 0.90).
    """

    input_px: int = 128
    heatmap_px: int = 32
    decimal_px: int = 8
    int_sigma: float = 1.5
    dec_sigma: float = 1.0
    label: str = "normalized"
    decimal_decode: str = "expectation"   # "argmax" | "expectation" | "calibrated"
    window_cells: float = 1.0
    # > 0: a point whose fraction lies within this much of a cell of its window's edge is read again
    # from the neighbouring cell on that side (DeployGraph). A lopsided integer peak more than half a
    # cell from the point otherwise pins it to the edge while the face moves, then lets it jump
    edge_reread: float = 0.03

    def __post_init__(self):
        if self.label == "official" and (self.window_cells != 1.0 or self.decimal_decode == "calibrated"):
            raise ValueError("the official decimal label lives inside one cell and decodes by argmax or "
                             "expectation: use window_cells 1 and no calibrated decode with it")
        self._calibration: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def stride(self) -> float:
        return self.input_px / self.heatmap_px

    @property
    def window_start(self) -> float:
        """Where the decimal window starts, in cells from the peak cell's corner."""
        return 0.5 - self.window_cells / 2

    def bin_centres(self, device=None) -> torch.Tensor:
        """(D,) fraction of a cell (from the peak cell's corner) that each decimal bin stands for."""
        j = torch.arange(self.decimal_px, device=device, dtype=torch.float32)
        if self.label == "official":  # official bins are labelled by round(D*frac): bin j <-> frac j/D
            return j / self.decimal_px
        return self.window_start + (j + 0.5) * self.window_cells / self.decimal_px

    def _labels_1d(self, frac: torch.Tensor) -> torch.Tensor:
        """(...,) fraction -> (..., D) normalized soft label along one axis (the 2-D label is the outer product)."""
        bin_w = self.window_cells / self.decimal_px
        g = torch.exp(-((self.bin_centres(frac.device) - frac[..., None]) / bin_w) ** 2 / (2 * self.dec_sigma ** 2))
        return g / g.sum(-1, keepdim=True)

    def encode(self, landmarks_crop: torch.Tensor, cells: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """-> {"heatmap": (B,K,H,H) target, "decimal": (B,K,D,D) probabilities, "cells": (B,K,2)}.

        cells: the integer cell each decimal map refines; default the true floor(p). Passing the
        network's predicted cell trains the decimal head for the cell it will actually refine:
        the fraction is then clipped to that cell's decimal window.
        """
        p = crop_to_heatmap(landmarks_crop, self.stride)
        floor = p.floor().clamp(0, self.heatmap_px - 1)
        heatmap = gaussian_maps(floor, self.heatmap_px, self.int_sigma, 3 * self.int_sigma)
        cells = floor.long() if cells is None else cells
        lo = self.window_start
        frac = (p - cells.to(p.dtype)).clamp(lo, lo + self.window_cells - 1e-6)
        if self.label == "official":
            g = gaussian_maps(torch.round(frac * self.decimal_px), self.decimal_px, self.dec_sigma, 3)
            decimal = torch.softmax(g.flatten(2), -1).view_as(g)
        else:
            lx, ly = self._labels_1d(frac[..., 0].float()), self._labels_1d(frac[..., 1].float())
            decimal = (ly[..., :, None] * lx[..., None, :]).to(p.dtype)
        return {"heatmap": heatmap, "decimal": decimal, "cells": cells}

    def _expectation_curve(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The label's expected fraction as a function of the true fraction (increasing), sampled."""
        if device not in self._calibration:
            lo = self.window_start
            # 257 samples: linear interpolation between them is within 3e-5 cell of 2049 samples
            frac = torch.linspace(lo, lo + self.window_cells, 257, device=device)
            expected = (self._labels_1d(frac) * self.bin_centres(device)).sum(-1)
            self._calibration[device] = (expected, frac)
        return self._calibration[device]

    def decimal_fraction(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,K,D,D) logits -> (B,K,2) fraction of a cell from the peak cell's corner."""
        centres = self.bin_centres(logits.device)
        if self.decimal_decode == "argmax":
            return centres[heatmap_argmax(logits.float())]
        prob = torch.softmax(logits.float().flatten(2), -1).view_as(logits)
        expected = torch.stack([(prob.sum(-2) * centres).sum(-1), (prob.sum(-1) * centres).sum(-1)], -1)
        if self.decimal_decode == "calibrated":
            return _interp(expected, *self._expectation_curve(logits.device))
        return expected

    def edge_margin(self, frac: torch.Tensor) -> torch.Tensor:
        """(B,K,2) decimal fractions -> (B,K) how far each lies inside its window (cells, nearest edge)."""
        lo = self.window_start
        return torch.minimum(frac - lo, lo + self.window_cells - frac).amin(-1)

    def edge_step(self, frac: torch.Tensor) -> torch.Tensor:
        """(...,2) decimal fractions -> (...,2) long: towards the neighbouring cell (+-1) on each axis where
        the fraction lies within edge_reread of that side's window edge, else 0."""
        lo = self.window_start
        return (frac > lo + self.window_cells - self.edge_reread).long() - (frac < lo + self.edge_reread).long()

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hm = _last_heatmap(outputs).float()
        cells = outputs.get("peak_cells")
        cells = heatmap_argmax(hm) if cells is None else cells
        frac = outputs["fraction"] if "fraction" in outputs else self.decimal_fraction(outputs["decimal"])
        p = cells.float() + frac
        return heatmap_to_crop(p, self.stride), heatmap_confidence(hm)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch: piecewise-linear through (xp, fp), xp increasing; clamped at the ends.
    The bracketing index is a count rather than torch.searchsorted, which ONNX cannot export."""
    i = (xp < x[..., None]).sum(-1).clamp(1, xp.shape[0] - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def _last_heatmap(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    hm = outputs["heatmaps"]
    return hm[:, -1] if hm.dim() == 5 else hm


def build_codec(name: str, **kwargs) -> HeatmapCodec | HIHCodec:
    """'hih' or a refiner name ('argmax', 'quarter', 'centroid', 'dark', 'softargmax')."""
    if name == "hih":
        return HIHCodec(**kwargs)
    keep = {k: v for k, v in kwargs.items() if k in ("input_px", "heatmap_px")}
    return HeatmapCodec(refine=name, sigma=kwargs.get("int_sigma", 1.5), **keep)
