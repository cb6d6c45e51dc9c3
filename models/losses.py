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
    # knowledge distillation: a trained teacher (a hihtrack checkpoint of the same heatmap geometry) is
    # a second target, its integer heatmap and its decimal distribution at the student's cells, weighted
    # like the ground truth's terms; distill_weight 0 = off. distill_on "real": only on the real faces of
    # a synthetic mix, so a teacher that is right on near-frontal faces holds them there (learning
    # without forgetting) and says nothing about the poses it never saw
    teacher: str = ""
    distill_weight: float = 0.0
    distill_on: Literal["all", "real"] = "all"


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of every stack against the same target: pred (B,S,K,H,W), target (B,K,H,W)."""
    return F.mse_loss(pred, target[:, None].expand_as(pred))


def decimal_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """logits, target (B,K,D,D); target rows are probabilities summing to 1."""
    log_p = F.log_softmax(logits.flatten(2).float(), -1)
    q = target.flatten(2)
    if kind == "official":
        return F.kl_div(log_p, q, reduction="mean")
    return -(q * log_p).sum(-1).mean()


def hih_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg: LossConfig) -> dict[str, torch.Tensor]:
    hm = heatmap_loss(outputs["heatmaps"].float(), targets["heatmap"])
    dec = decimal_loss(outputs["decimal"], targets["decimal"], cfg.decimal_loss)
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
