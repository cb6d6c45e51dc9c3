"""ARKit shapes on real annotated faces: each edit of a face moves its own shapes and leaves the
others (cross-talk <= 0.2); shapes from the tracker's landmarks agree with shapes from the annotation."""
import numpy as np
import pytest

from models.data import load_faces
from stream.expressions import CalibrationError, CalibrationProfile, ExpressionEstimator

CROSS_TALK = 0.2


def _faces(data_300w, n=12):
    return [f.landmarks_px.astype(np.float64) for f in load_faces(data_300w, "test")[:n]]


def _io(p):
    return np.linalg.norm(p[36] - p[45])


def _axes(p):
    """The face's own right and down unit vectors (edits move along the face, not the image)."""
    right = (p[45] - p[36]) / _io(p)
    return right, np.array([-right[1], right[0]])


def _move(p, idx, right_io, down_io):
    q = p.copy()
    r, d = _axes(p)
    q[idx] += (right_io * r + down_io * d) * _io(p)
    return q


def _close_lids(p):
    q = p.copy()
    for a, b in ((37, 41), (38, 40), (43, 47), (44, 46)):
        q[a] = q[b] = (p[a] + p[b]) / 2
    return q


def _open_jaw(p):
    q = _move(p, [56, 57, 58, 65, 66, 67, 5, 6, 7, 8, 9, 10, 11], 0, 0.3)   # lower lip and chin drop
    return _move(q, [48, 54, 60, 64], 0, 0.15)                              # the corners go half as far


def _smile(p):
    q = _move(p, [48, 60], -0.05, -0.12)       # corners up and a little out
    return _move(q, [54, 64], 0.05, -0.12)


def _raise_brows(p):
    return _move(p, list(range(17, 27)), 0, -0.15)


EDITS = {  # edit -> (shapes it must move, shapes that may move with it)
    "close lids": (_close_lids, {"eyeBlinkLeft", "eyeBlinkRight"}, {"eyeSquintLeft", "eyeSquintRight"}),
    "open jaw": (_open_jaw, {"jawOpen"}, {"mouthRollLower", "mouthFunnel"}),
    "smile": (_smile, {"mouthSmileLeft", "mouthSmileRight"}, set()),
    "raise brows": (_raise_brows, {"browInnerUp", "browOuterUpLeft", "browOuterUpRight"}, set()),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_moves_its_own_shapes_only(data_300w, edit):
    fn, own, allowed = EDITS[edit]
    for p in _faces(data_300w):
        est = ExpressionEstimator()
        est.calibrate(p)
        rest = est.blendshapes(p)
        assert max(rest.values()) < 0.05, max(rest.items(), key=lambda kv: kv[1])
        moved = est.blendshapes(fn(p))
        assert all(moved[k] > 0.5 for k in own), {k: moved[k] for k in own}
        others = {k: v for k, v in moved.items() if k not in own | allowed}
        worst = max(others.items(), key=lambda kv: kv[1])
        assert worst[1] <= CROSS_TALK, (edit, worst)


def test_at_least_thirty_shapes_with_pupils():
    from tests.test_eyes import _eye_centres, _face68
    p = _face68()
    shapes = ExpressionEstimator().blendshapes(p, 0.0, _eye_centres(p))
    assert len(shapes) >= 30 and all(0.0 <= v <= 1.0 for v in shapes.values())
    assert sum(k.startswith("eye") for k in shapes) == 14 and sum(k.startswith("brow") for k in shapes) == 5


def test_calibration_profile_round_trip_and_ranges(data_300w, tmp_path):
    p = _faces(data_300w, 1)[0]
    est = ExpressionEstimator()
    est.calibrate(p)
    half_open = _move(p, [56, 57, 58, 65, 66, 67, 5, 6, 7, 8, 9, 10, 11], 0, 0.15)
    assert est.blendshapes(half_open)["jawOpen"] < 0.5
    est.capture_range("jawOpen", half_open)        # this user's widest opening is smaller than the default
    assert est.blendshapes(half_open)["jawOpen"] == pytest.approx(1.0)
    est.profile.save(tmp_path / "me.json")
    again = ExpressionEstimator(CalibrationProfile.load(tmp_path / "me.json"))
    assert again.blendshapes(half_open) == pytest.approx(est.blendshapes(half_open))
    (tmp_path / "bad.json").write_text('{"ranges": {"noSuchShape": 1}}')
    with pytest.raises(CalibrationError, match="noSuchShape"):
        CalibrationProfile.load(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="cannot read"):
        CalibrationProfile.load(tmp_path / "missing.json")


def test_automatic_neutral_follows_the_resting_face_until_frozen(data_300w):
    p = _faces(data_300w, 1)[0]
    rest = _move(p, [57, 66], 0, 0.05)         # this user's resting mouth is a little open
    est = ExpressionEstimator(CalibrationProfile(auto=True))
    for _ in range(50):
        est.blendshapes(rest)
    assert est.blendshapes(rest)["jawOpen"] < 0.05
    est.freeze()
    assert est.blendshapes(_open_jaw(p))["jawOpen"] > 0.4
    before = dict(est.neutral)
    est.blendshapes(_open_jaw(p))
    assert est.neutral == before                       # frozen: the neutral no longer moves


@pytest.mark.slow
def test_shapes_from_the_tracker_agree_with_shapes_from_the_annotation(data_300w):
    """300-W common test faces, the tracker's landmarks (settled from the annotation's box as the tracker
    re-crops a face) and its eye network's outline, as the pipeline measures them, against the annotation
    itself: the shapes an avatar shows most."""
    import cv2

    from models.detector import FaceBox
    from models.eyes import with_eye_outline
    from models.landmarkers import HIHLandmarker, settle
    lm = HIHLandmarker(threads=2)
    ours, truth = [], []
    for f in load_faces(data_300w, "test")[::2]:           # every other face: 277, as many HELEN as LFPW
        img = cv2.imread(str(f.image_path))
        gt = f.landmarks_px.astype(np.float64)
        res = settle(lm, img, lm(img, [FaceBox.from_landmarks(gt)]), 2)[0]
        eyes = lm.eyes(img, [res.landmarks_px])[0]
        ours.append(ExpressionEstimator().blendshapes(with_eye_outline(res.landmarks_px, eyes.outline_px)))
        truth.append(ExpressionEstimator().blendshapes(gt))
    corr = {k: np.corrcoef([o[k] for o in ours], [t[k] for t in truth])[0, 1] for k in ours[0]}
    for k in ("jawOpen", "mouthSmileLeft", "mouthSmileRight"):
        assert corr[k] >= 0.9, (k, corr[k])
    for k in ("eyeBlinkLeft", "eyeBlinkRight"):       # eyelids are a few px: the noisiest of the three
        assert corr[k] >= 0.85, (k, corr[k])


def test_calibration_is_saved_and_loaded_by_the_next_run(tmp_path):
    from hihtrack import FaceTracker
    from stream.demo import DemoSource
    from stream.settings import load_settings
    path = tmp_path / "me.json"
    settings = load_settings(None, calibration=str(path), landmarker="mediapipe")
    frames = [img for img, _ in DemoSource(frames=3).frames()]
    with FaceTracker(settings, running_mode="video") as t:
        t.calibrate()
        t.process(frames[0], 0.0)
    assert path.is_file()
    saved = CalibrationProfile.load(path)
    with FaceTracker(settings, running_mode="video") as t:
        face = t.process(frames[0], 0.0).faces[0]
    assert max(face.expressions.values()) < 0.05          # the same face is the neutral: nothing moves
    assert saved.neutral == CalibrationProfile.load(path).neutral
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read the calibration profile"):
        with FaceTracker(settings, running_mode="video") as t:
            t.process(frames[0], 0.0)


def test_shape_names_are_every_shape_blendshapes_gives():
    from stream.expressions import SHAPE_NAMES
    from tests.test_eyes import _face68
    pts = _face68()
    with_pupils = ExpressionEstimator().blendshapes(pts, 0.0, np.stack([pts[36:42].mean(0), pts[42:48].mean(0)]))
    assert list(with_pupils) != [] and set(with_pupils) == set(SHAPE_NAMES) and len(SHAPE_NAMES) == len(set(SHAPE_NAMES))
    assert set(ExpressionEstimator().blendshapes(pts)) == {n for n in SHAPE_NAMES if not n.startswith("eyeLook")}


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".npz"])
def test_recordings_keep_the_shape_values_when_asked(tmp_path, ext):
    """record_expressions: every shape a column (CSV), a mapping (JSON Lines) or an array (npz), by name;
    a face without a value (no pupils: no eyeLook) and a frame without a face read back as NaN."""
    from stream.expressions import SHAPE_NAMES
    from stream.recorders import Recorder, RecordMeta, load_recording
    from tests.test_vmc import _frame
    rec = Recorder(tmp_path / f"r{ext}", RecordMeta("300w-68", 68, "hih", None, "test", 30.0, None, {}, {}, list(SHAPE_NAMES)))
    f = _frame(0, 0.0, True)
    f.faces[0].expressions = {n: i / 100 for i, n in enumerate(SHAPE_NAMES) if not n.startswith("eyeLook")}
    rec.write(f)
    rec.write(_frame(1, 1 / 30, False))
    rec.close()
    data = load_recording(tmp_path / f"r{ext}")
    names = list(data["expression_names"])
    assert names == list(SHAPE_NAMES) and data["expressions"].shape == (2, 1, len(SHAPE_NAMES))
    got = dict(zip(names, data["expressions"][0, 0]))
    assert all(abs(got[n] - v) < 1e-4 for n, v in f.faces[0].expressions.items())
    assert np.isnan(got["eyeLookInLeft"]) and np.isnan(data["expressions"][1]).all()
    if ext == ".csv":
        assert "jawOpen" in (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
