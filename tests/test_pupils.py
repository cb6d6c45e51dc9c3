"""Pupils (models.pupils) and what follows from them: gaze shapes, blinks, eye bones, recordings."""
import numpy as np
import pytest
import torch

from models import pupil_net as PN
from models import pupils as PP
from stream.expressions import ExpressionEstimator
from stream.senders import eye_bones


def _face68(io_px=60.0, centre=(100.0, 100.0)) -> np.ndarray:
    """A frontal 68-point face with eyes of realistic proportions (eye width 0.31 IO)."""
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (68, 2)) + centre
    cx, cy = centre
    half_w = 0.155 * io_px
    for idx, ex in ((range(36, 42), cx - io_px / 2 + half_w), (range(42, 48), cx + io_px / 2 - half_w)):
        a, b, c, d, e, f = idx
        pts[a], pts[d] = (ex - half_w, cy), (ex + half_w, cy)
        pts[b], pts[c] = (ex - half_w / 3, cy - 0.09 * io_px), (ex + half_w / 3, cy - 0.09 * io_px)
        pts[f], pts[e] = (ex - half_w / 3, cy + 0.09 * io_px), (ex + half_w / 3, cy + 0.09 * io_px)
    pts[30] = (cx, cy + 0.5 * io_px)
    pts[48], pts[54] = (cx - 0.45 * io_px, cy + 0.9 * io_px), (cx + 0.45 * io_px, cy + 0.9 * io_px)
    pts[62], pts[66] = (cx, cy + 0.88 * io_px), (cx, cy + 0.92 * io_px)
    pts[17:27, 1] = cy - 0.4 * io_px
    return pts


def _eye_centres(pts):
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0)])


def test_eye_crops_round_trip_and_mirror_the_second_eye():
    pts = torch.from_numpy(_face68()).float()[None]
    m = PN.eye_matrices(pts)
    centres = torch.from_numpy(_eye_centres(pts[0].numpy())).double()
    in_crop = PP.crop.transform_points(m, centres[None, :, None])[0, :, 0]
    assert torch.allclose(in_crop, torch.full((2, 2), (PP.EYE_PX - 1) / 2, dtype=torch.float64), atol=1e-6)
    back = PN.to_image(in_crop.reshape(2, 2).float(), m)
    assert torch.allclose(back[0].double(), centres, atol=1e-3)
    # the second eye is mirrored: its outer corner (45) lands on the left of the crop, like 36 in the first
    outer = PP.crop.transform_points(m[0, 1], pts[0, 45].double()[None])[0]
    inner = PP.crop.transform_points(m[0, 1], pts[0, 42].double()[None])[0]
    assert outer[0] < inner[0]


def test_net_output_is_a_point_inside_the_crop():
    net = PN.PupilNet(PN.PupilTrainConfig().width)
    out = net(torch.randn(5, 3, PP.EYE_PX, PP.EYE_PX))
    assert out.shape == (5, 2) and (out >= -0.5).all() and (out <= PP.EYE_PX - 0.5).all()
    assert sum(p.numel() for p in net.parameters()) < 200_000          # small: a fraction of a ms per eye


def test_run_time_locator_gives_the_networks_pupils():
    """PupilLocator (the eye network as a cached ONNX graph, OpenCV eye crops, no torch) puts the pupils
    where the torch network does on the same face (crops by grid_sample there)."""
    imgs, lms, _ = _synthetic_eyes(3, 2)
    ref = PN.predict(PN.load_pupil_net(PP.WEIGHTS), imgs, lms).numpy()
    locator = PP.PupilLocator(PP.WEIGHTS)
    got = np.stack([locator(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), [lm.numpy()])[0] for img, lm in zip(imgs, lms)])
    assert got.shape == (3, 2, 2) and np.abs(got - ref).max() < 0.1, np.abs(got - ref).max()


def _synthetic_eyes(n: int, seed: int):
    """Grey faces whose pupils are dark discs at random places inside the eyes."""
    import cv2
    rng = np.random.default_rng(seed)
    imgs, lms, pups = [], [], []
    for _ in range(n):
        pts = _face68(io_px=rng.uniform(50, 70), centre=tuple(rng.uniform(90, 110, 2)))
        img = np.full((200, 200, 3), rng.integers(120, 200), np.uint8)
        pupils = []
        for idx in (range(36, 42), range(42, 48)):
            e = pts[list(idx)]
            cv2.ellipse(img, tuple(e.mean(0).astype(int)), (int(np.ptp(e[:, 0]) / 2), int(np.ptp(e[:, 1]) / 2) + 1),
                        0, 0, 360, (235, 235, 235), -1)
            p = e.mean(0) + rng.uniform(-0.3, 0.3, 2) * [np.ptp(e[:, 0]) / 2, np.ptp(e[:, 1]) / 2]
            cv2.circle(img, tuple(np.round(p * 16).astype(int)), int(np.ptp(e[:, 0]) * 0.2 * 16), (30, 30, 30), -1, cv2.LINE_AA, 4)
            pupils.append(p)
        imgs.append(img)
        lms.append(pts)
        pups.append(pupils)
    return (torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(np.stack(lms), dtype=torch.float32),
            torch.tensor(np.stack(pups), dtype=torch.float32))


@pytest.mark.slow
def test_the_network_learns_to_find_pupils():
    torch.set_num_threads(2)
    train, val = _synthetic_eyes(160, 0), _synthetic_eyes(32, 1)
    before = PN.evaluate_pupils(PN.PupilNet(PN.PupilTrainConfig().width), *val)
    net, report = PN.train_pupils(*train, val, PN.PupilTrainConfig(steps=160, batch_size=32, lr=3e-3), log=lambda *_: None)
    after = PN.evaluate_pupils(net, *val)
    assert after < 0.5 * before and after < 0.03, (before, after)    # within 3 % of the inter-ocular distance
    assert report["history"][-1]["val_error_io"] == pytest.approx(after)


def test_gaze_shapes_follow_the_pupils_and_hold_through_a_blink():
    pts = _face68()
    centres = _eye_centres(pts)
    half = 0.155 * 60
    est = ExpressionEstimator()
    est.calibrate(pts, 0.0, centres)
    ahead = est.blendshapes(pts, 0.0, centres)
    assert all(ahead[k] < 0.05 for k in ahead if k.startswith("eyeLook"))
    right = est.blendshapes(pts, 0.0, centres + [0.4 * half, 0])         # both pupils towards image right
    assert right["eyeLookOutLeft"] > 0.6 and right["eyeLookInRight"] > 0.6
    assert right["eyeLookInLeft"] == 0 and right["eyeLookOutRight"] == 0 and right["eyeLookUpLeft"] < 0.05
    down = est.blendshapes(pts, 0.0, centres + [0, 0.2 * half])
    assert down["eyeLookDownLeft"] > 0.6 and down["eyeLookDownRight"] > 0.6
    closed = pts.copy()
    closed[[37, 38, 43, 44], 1] = closed[[41, 40, 47, 46], 1]               # lids shut: the pupil is not seen
    shut = est.blendshapes(closed, 0.0, centres + [0, 0.6 * half])          # a detector guess on a shut lid
    assert shut["eyeBlinkLeft"] > 0.8 and shut["eyeLookDownLeft"] == pytest.approx(down["eyeLookDownLeft"])


def test_blinks_are_stabilised_but_winks_pass():
    pts = _face68()
    est = ExpressionEstimator()
    est.calibrate(pts)
    half = pts.copy()
    half[[43, 44], 1] += 0.035 * 60                       # one lid a little lower: noise, not a wink
    b = est.blendshapes(half)
    assert b["eyeBlinkLeft"] == b["eyeBlinkRight"] > 0
    wink = pts.copy()
    wink[[43, 44], 1] = wink[[47, 46], 1]                 # the image-right (subject's left) eye shut
    w = est.blendshapes(wink)
    assert w["eyeBlinkLeft"] > 0.8 and w["eyeBlinkRight"] < 0.2
    turned = est.blendshapes(wink, yaw_deg=40.0)          # nose to image left: the shut eye is the near one
    assert turned["eyeBlinkRight"] == turned["eyeBlinkLeft"] > 0.8


def test_eye_bones_turn_with_the_look():
    ahead = eye_bones({k: 0.0 for k in ("eyeLookInLeft", "eyeLookOutLeft", "eyeLookInRight", "eyeLookOutRight")})
    assert ahead["LeftEye"] == pytest.approx((0.0, 0.0, 0.0, 1.0), abs=1e-9)
    side = eye_bones({"eyeLookInLeft": 1.0, "eyeLookOutRight": 1.0})     # both look to image left
    assert side["LeftEye"] == pytest.approx(side["RightEye"]) and abs(side["LeftEye"][1]) > 0.2
    assert eye_bones({"jawOpen": 1.0}) == {}


def test_recordings_carry_the_pupils_as_points_68_and_69(tmp_path):
    from stream.recorders import Recorder, RecordMeta, load_recording
    from tests.test_vmc import _frame
    meta = RecordMeta("300w-68+pupils", 70, "hih", None, "test", 30.0, None, {})
    rec = Recorder(tmp_path / "r.csv", meta)
    f = _frame(0, 0.0, True)
    f.faces[0].pupils_px = np.array([[10.0, 11.0], [20.0, 21.0]], np.float32)
    g = _frame(1, 1 / 30, True)                 # a face without pupils: NaN, never shifted columns
    rec.write(f)
    rec.write(g)
    rec.close()
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert "x_68" in header and "y_69" in header and "sx_69" in header
    data = load_recording(tmp_path / "r.csv")
    lm = data["landmarks"]
    assert np.allclose(lm[0, 0, 68:], [[10, 11], [20, 21]]) and np.isnan(lm[1, 0, 68:]).all()


def test_a_face_first_seen_with_shut_eyes_still_gets_gaze_values():
    pts = _face68()
    closed = pts.copy()
    closed[[37, 38, 43, 44], 1] = closed[[41, 40, 47, 46], 1]
    shapes = ExpressionEstimator().blendshapes(closed, 0.0, _eye_centres(pts))
    assert shapes["eyeBlinkLeft"] > 0.8 and "eyeLookInLeft" in shapes and "eyeLookInRight" in shapes
