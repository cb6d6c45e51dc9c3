"""The eye network (models.eyes: pupils and eye outlines) and what follows from them: gaze shapes, blinks,
eye bones, recordings."""
import numpy as np
import pytest
import torch

from models import eye_net as EN
from models import eyes as EY
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
    m = EN.eye_matrices(pts)
    centres = torch.from_numpy(_eye_centres(pts[0].numpy())).double()
    in_crop = EY.crop.transform_points(m, centres[None, :, None])[0, :, 0]
    assert torch.allclose(in_crop, torch.full((2, 2), (EY.EYE_PX - 1) / 2, dtype=torch.float64), atol=1e-6)
    back = EN.to_image(in_crop.reshape(2, 1, 2).float(), m)
    assert torch.allclose(back[0, :, 0].double(), centres, atol=1e-3)
    # the second eye is mirrored: its outer corner (45) lands on the left of the crop, like 36 in the first,
    # and its outline in OUTLINE's order lies in its crop as the first eye's does in its own
    outer = EY.crop.transform_points(m[0, 1], pts[0, 45].double()[None])[0]
    inner = EY.crop.transform_points(m[0, 1], pts[0, 42].double()[None])[0]
    assert outer[0] < inner[0]
    in_crops = EY.crop.transform_points(m[0], EN.eye_points(pts, torch.from_numpy(_eye_centres(pts[0].numpy()))[None].float())[0].double())
    assert torch.allclose(in_crops[0], in_crops[1], atol=1e-3)       # _face68's eyes are mirror images


def test_outline_order_round_trips_and_the_mean_outline_is_what_the_eye_shapes_read():
    pts = _face68()
    per_eye = np.stack([pts[list(o)] for o in EY.OUTLINE])
    assert np.array_equal(EY.outline_to_68(per_eye), pts[36:48])
    moved = pts[36:48] + [0.0, 2.0]
    mean = EY.with_eye_outline(pts, moved)
    assert np.allclose(mean[36:48], pts[36:48] + [0, 1]) and np.array_equal(mean[:36], pts[:36])
    assert EY.with_eye_outline(pts, None) is pts
    assert EY.with_eye_outline(pts, np.full((12, 2), np.nan)) is pts


def test_net_output_is_a_point_inside_the_crop():
    net = EN.EyeNet(EN.EyeTrainConfig().width)
    out = net(torch.randn(5, 3, EY.EYE_PX, EY.EYE_PX))
    assert out.shape == (5, EY.POINTS, 2) and (out >= -0.5).all() and (out <= EY.EYE_PX - 0.5).all()
    assert sum(p.numel() for p in net.parameters()) < 200_000          # small: a fraction of a ms per eye


def test_run_time_locator_gives_the_networks_eyes():
    """EyeLocator (the eye network as a cached ONNX graph, OpenCV eye crops, no torch) puts the pupils and
    the outline where the torch network does on the same face (crops by grid_sample there)."""
    imgs, lms, _ = _synthetic_eyes(3, 2)
    ref = EN.predict(EN.load_eye_net(EY.WEIGHTS), imgs, lms).numpy()                     # (3,2,P,2)
    locator = EY.EyeLocator(EY.WEIGHTS)
    got = [locator(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), [lm.numpy()])[0] for img, lm in zip(imgs, lms)]
    pupils, outlines = np.stack([g.pupils_px for g in got]), np.stack([g.outline_px for g in got])
    assert pupils.shape == (3, 2, 2) and np.abs(pupils - ref[:, :, 0]).max() < 0.1, np.abs(pupils - ref[:, :, 0]).max()
    assert outlines.shape == (3, 12, 2) and np.abs(outlines - EY.outline_to_68(ref[:, :, 1:])).max() < 0.1


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
def test_the_network_learns_to_find_pupils_and_outlines():
    torch.set_num_threads(2)
    train, val = _synthetic_eyes(160, 0), _synthetic_eyes(32, 1)
    before = EN.evaluate_eye_net(EN.EyeNet(EN.EyeTrainConfig().width), *val)
    net, report = EN.train_eye_net(*train, val, EN.EyeTrainConfig(steps=160, batch_size=32, lr=3e-3), log=lambda *_: None)
    after = EN.evaluate_eye_net(net, *val)
    # pupils within 3 % of the inter-ocular distance
    assert after["pupils"] < 0.5 * before["pupils"] and after["pupils"] < 0.03, (before, after)
    assert after["outline"] < 0.5 * before["outline"], (before, after)
    assert report["history"][-1]["val_pupils_io"] == pytest.approx(after["pupils"])


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


def test_the_shipped_eye_network_closes_the_lids_the_landmarks_left_open(data_300w):
    """Real faces (300-W common) whose eyes are closed in the image (models.eyelids) while the eye crops
    are still cut from the open eyes' landmarks, as when an eye shuts between two frames: the eye
    network's own lids close, and the mean outline the blink shapes read shows most of the closing."""
    import cv2

    from models.data import load_faces
    from models.eyelids import close_eye
    from stream.expressions import measures

    def lid_gaps(pts68):
        m = measures(pts68)
        return np.array([m["eye_l"], m["eye_r"]])

    locator = EY.EyeLocator()
    faces = [f for f in load_faces(data_300w, "test")[:40] if lid_gaps(f.landmarks_px).min() > 0.25][:8]
    assert len(faces) == 8
    for f in faces:
        image, pts = cv2.imread(str(f.image_path)), f.landmarks_px.astype(np.float64)
        shut = image
        for eye in (0, 1):
            shut, _ = close_eye(shut, pts, eye, 1.0)
        open_eyes, shut_eyes = locator(image, [pts])[0], locator(shut, [pts])[0]
        alone = [lid_gaps(np.concatenate([pts[:36], e.outline_px, pts[48:]])) for e in (open_eyes, shut_eyes)]
        assert (np.abs(alone[1]) < 0.25 * alone[0]).all(), (f.image_path.name, alone)      # shut, lid on lid
        seen_open = lid_gaps(EY.with_eye_outline(pts, open_eyes.outline_px))
        seen_shut = lid_gaps(EY.with_eye_outline(pts, shut_eyes.outline_px))
        # the landmarks' half of the mean stays open: the eye network's half alone closing fully gives 0.5
        assert (seen_shut < 0.65 * seen_open).all(), (f.image_path.name, seen_open, seen_shut)
