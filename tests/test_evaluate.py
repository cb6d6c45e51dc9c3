"""models.evaluate's shape agreement: what eval reports for how well landmarks carry expressions."""
import numpy as np
import pytest

from models.evaluate import shape_correlations


def _mouth_open(pts: np.ndarray) -> dict[str, float]:
    return {"open": float(pts[66, 1] - pts[62, 1]), "constant": 1.0}


def test_shape_correlations_skip_missed_faces_and_follow_the_error():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 10, (40, 68, 2))
    exact = gt.copy()
    exact[3] = np.nan                                    # a missed face is left out, not counted as wrong
    r = shape_correlations(exact, gt, _mouth_open)
    assert r["open"] == pytest.approx(1.0)
    assert np.isnan(r["constant"])                       # a shape that never varies has no correlation
    noisy = gt + rng.normal(0, 10, gt.shape)             # errors as large as the motion itself
    assert 0.3 < shape_correlations(noisy, gt, _mouth_open)["open"] < 0.9
    unrelated = rng.normal(0, 10, gt.shape)
    assert abs(shape_correlations(unrelated, gt, _mouth_open)["open"]) < 0.4
