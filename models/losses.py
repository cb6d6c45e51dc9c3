"""HIH losses (spec §3.3), vectorised over batch, stacks and landmarks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    heatmap_weight: float = 1.0
    decimal_weight: float = 0.05
    # "official": kl_div(log_softmax, q, reduction="mean") = sum KL / (B*K*D*D), as the paper's code.
    # "ce": soft-label cross-entropy per landmark (sum over the D*D cells, mean over B*K).
    decimal_loss: Literal["official", "ce"] = "ce"
    # transform consistency (SBR-style): two views of a face, a small similarity apart, must decode to
    # the same landmarks once mapped into one frame; squared difference in heatmap cells
    consistency_weight: float = 0.0
    # knowledge distillation: a trained teacher (a hihtrack checkpoint) is a second target, weighted like
    # the ground truth's terms; distill_weight 0 = off. distill_on "real": only on the real faces of a
    # synthetic mix, so a teacher that is right on near-frontal faces holds them there (learning without
    # forgetting) and says nothing about the poses it never saw.
    # distill_target "heatmaps": the teacher's integer heatmap and its decimal distribution at the
    # student's cells (the teacher must share the student's heatmap geometry). "landmarks": the teacher's
    # decoded landmarks, encoded by the student's codec like ground truth; the teacher reads the student's
    # crop resized to its own input, so a smaller input can learn from a larger one. Several teachers,
    # comma separated, teach their mean targets (an ensemble is nearer the truth than either member)
    teacher: str = ""
    distill_weight: float = 0.0
    distill_on: Literal["all", "real"] = "all"
    distill_target: Literal["heatmaps", "landmarks"] = "heatmaps"
    # the jaw points of synthetic views, against the rest (1 = alike): the profiler marches the far-side
    # jaw to the rendered silhouette, an approximation of 300-W's convention, and every synthetic mix so
    # far moved the jaw of real faces off their annotation
    synth_jaw_weight: float = 1.0
    # the upper-lid points of faces given closed eyes (augment.eyes_closed_p), against the rest: closing moves
    # them about one heatmap cell, a lesson that at weight 1 is lost among the 68 points of every face
    closed_lid_weight: float = 1.0


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of every stack against the same target: pred (B,S,K,H,W), target (B,K,H,W); weights (B,K)
    scale each point's term (all ones = the plain mean)."""
    if weights is None:
        return F.mse_loss(pred, target[:, None].expand_as(pred))
    return (((pred - target[:, None]) ** 2).mean((1, 3, 4)) * weights).mean()


def decimal_loss(logits: torch.Tensor, target: torch.Tensor, kind: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """logits, target (B,K,D,D); target rows are probabilities summing to 1; weights (B,K) as heatmap_loss."""
    log_p = F.log_softmax(logits.flatten(2).float(), -1)
    q = target.flatten(2)
    if kind == "official":
        per_point = F.kl_div(log_p, q, reduction="none").mean(-1)
    else:
        per_point = -(q * log_p).sum(-1)
    return per_point.mean() if weights is None else (per_point * weights).mean()


def hih_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg: LossConfig,
             weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """weights (B,K): each point's share of the loss (None: all alike)."""
    hm = heatmap_loss(outputs["heatmaps"].float(), targets["heatmap"], weights)
    dec = decimal_loss(outputs["decimal"], targets["decimal"], cfg.decimal_loss, weights)
    return {"loss": cfg.heatmap_weight * hm + cfg.decimal_weight * dec, "heatmap": hm, "decimal": dec}


def consistency_loss(points_a_in_b: torch.Tensor, points_b: torch.Tensor, stride: float) -> torch.Tensor:
    """Huber distance (heatmap cells) between view a's landmarks mapped into view b and view b's.

    Landmarks the two views place more than a cell apart are left out: the decimal map cannot
    bridge a wrong integer peak, and their large errors made fine-tuning diverge.
    """
    diff = (points_a_in_b - points_b) / stride
    agree = (diff.abs() < 1.0).all(-1, keepdim=True)
    huber = F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=0.25)
    return (huber * agree).sum() / agree.sum().clamp_min(1) / 2
