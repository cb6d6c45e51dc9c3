"""Landmark accuracy metrics (spec §6): NME (inter-ocular), FR@0.1, AUC@0.1, CED."""
from __future__ import annotations

import numpy as np
from scipy.integrate import simpson


def nme_per_face(pred: np.ndarray, gt: np.ndarray, ocular: tuple[int, int], norm_from: np.ndarray | None = None) -> np.ndarray:
    """pred, gt (N,K,2) in the same pixel frame -> (N,) mean point error / outer-eye distance.

    norm_from: the full ground truth the eye corners are read from, when pred/gt hold only a part."""
    ref = gt if norm_from is None else norm_from
    norm = np.linalg.norm(ref[:, ocular[0]] - ref[:, ocular[1]], axis=-1)
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / norm


def ced(nme: np.ndarray, limit: float = 0.1, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.arange(0, limit + step / 2, step)
    return thresholds, (nme[None, :] <= thresholds[:, None]).mean(1)


def summarize(nme: np.ndarray, limit: float = 0.1) -> dict[str, float]:
    """NME %, FR@limit %, AUC@limit (Simpson over the CED, as the official code)."""
    t, c = ced(nme, limit)
    return {"nme": 100 * float(nme.mean()), "fr": 100 * float((nme > limit).mean()),
            "auc": float(simpson(c, x=t) / limit), "n": int(len(nme))}
