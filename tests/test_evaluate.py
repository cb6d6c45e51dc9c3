"""models.evaluate: what eval reports for how well landmarks carry expressions, and pupils compared fairly."""
import numpy as np
import pytest

from models.evaluate import closed_eyes, pupil_table, shape_correlations


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


def _eyes(rows: list) -> np.ndarray:
    """Faces whose 68 'points' all carry (blink left, blink right); None: a missed face (NaN)."""
    out = np.full((len(rows), 68, 2), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out


def test_closed_eyes_counts_blinks_seen_and_open_eyes_taken_for_closed():
    blink = lambda pts: {"eyeBlinkLeft": float(pts[0, 0]), "eyeBlinkRight": float(pts[0, 1])}   # noqa: E731
    gt = _eyes([(0.9, 0.9), (0.9, 0.1), (0.1, 0.4), (0.9, 0.9)])      # 0.4: a squint, neither
    pred = _eyes([(0.7, 0.2), (0.9, 0.6), (0.1, 0.9), None])         # the last face missed: left out
    assert closed_eyes(pred, gt, blink) == {"closed": 3, "seen_closed": 2, "open": 2, "false_closed": 1}


def test_pupils_are_also_compared_on_the_faces_every_method_found():
    gt = np.zeros((4, 2, 2))
    io = np.full(4, 100.0)
    many = np.ones((4, 2, 2))                 # 1.41 % IO on every face ...
    many[3] = 30.0                            # ... and 42 % on the hard one the other method missed
    few = np.full((4, 2, 2), 2.0)
    few[3] = np.nan
    rows = pupil_table({"many": many, "few": few}, gt, io)
    assert rows["many"]["faces"] == 4 and rows["few"]["faces"] == 3
    assert rows["many"]["mean"] > rows["few"]["mean"]                  # the hard face counts against it alone
    common = rows["many, on the faces all find"]
    assert common["faces"] == 3 and common["mean"] == pytest.approx(100 * np.sqrt(2) / 100)
    assert rows["few, on the faces all find"]["mean"] == pytest.approx(rows["few"]["mean"])
    assert set(pupil_table({"alone": many}, gt, io)) == {"alone"}


def test_the_model_table_measures_a_candidate_beside_the_shipped_weights(data_300w, tmp_path, monkeypatch):
    """bench models --weights: a checkpoint that is not shipped gets its own row, evaluated and timed
    with its own weights, beside every shipped one."""
    import shutil

    import bench.models as bm
    from models.engine import SHIPPED_WEIGHTS

    evaluated, timed = [], []

    class Result:
        rows = {"hihtrack (hih decode)": {"nme": 3.0, "detected": 1}}

    monkeypatch.setattr(bm, "evaluate", lambda faces, weights, *a, **k: evaluated.append(weights) or Result())
    monkeypatch.setattr(bm, "hih_costs", lambda weights, image, box: timed.append(weights) or {"network_1t": 1.0})
    monkeypatch.setattr(bm, "competitor_costs", lambda image, box: {})
    candidate = tmp_path / "mine.pt"
    shutil.copy(SHIPPED_WEIGHTS["fast"], candidate)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "300w").symlink_to(data_300w)
    md = bm.run_models_bench(tmp_path / "data", tmp_path / "out", log=lambda m: None, candidates=(candidate,))
    assert "| candidate mine |" in md
    assert set(timed) == set(evaluated) == {*SHIPPED_WEIGHTS.values(), candidate}
