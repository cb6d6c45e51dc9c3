"""Smoothers: less jitter on a noisy static point, bounded lag on a ramp, resets, confidence."""
import numpy as np
import pytest

from stream.smoothing import KalmanSmoother, NoSmoother, build_smoother

FPS, FACE_PX, N = 30.0, 150.0, 300


def run(sm, z, conf=None):
    return np.stack([sm.update(z[i], None if conf is None else conf[i], i / FPS, FACE_PX) for i in range(len(z))])


def noisy_static(sigma_px=1.0, k=68, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(100, 300, (k, 2))
    return truth, truth[None] + rng.normal(0, sigma_px, (N, k, 2))


@pytest.mark.parametrize("name,settings,ratio", [
    ("kalman", {}, 0.7),                          # the default, tuned for responsiveness by bench jitter
    ("kalman", {"process_noise": 0.1}, 0.3),      # a steadier setting on the same curve
    ("one_euro", {}, 0.5),                        # MediaPipe's defaults
])
def test_reduces_jitter_of_static_point(name, settings, ratio):
    truth, z = noisy_static()
    out = run(build_smoother(name, settings), z)
    jitter_in = np.sqrt(np.mean(np.diff(z[30:], axis=0) ** 2))
    jitter_out = np.sqrt(np.mean(np.diff(out[30:], axis=0) ** 2))
    assert jitter_out < ratio * jitter_in, (jitter_in, jitter_out)
    assert np.abs(out[60:] - truth).mean() < np.abs(z[60:] - truth).mean()


@pytest.mark.parametrize("name,max_lag_px", [("kalman", 1.5), ("one_euro", 3.0)])
def test_follows_ramp_with_bounded_lag(name, max_lag_px):
    t = np.arange(N) / FPS
    truth = np.stack([100 + 150 * t, 200 - 60 * t], -1)[:, None, :]   # 150 px/s: a brisk head move
    rng = np.random.default_rng(1)
    out = run(build_smoother(name), truth + rng.normal(0, 0.5, truth.shape))
    err = np.abs(out[60:] - truth[60:]).mean(axis=(0, 1))
    assert err.max() < max_lag_px, err


def test_low_confidence_points_are_trusted_less():
    truth, z = noisy_static(k=2)
    z[:, 1] = truth[1] + np.random.default_rng(2).normal(0, 1.0, (N, 2))
    conf = np.tile([1.0, 1.0], (N, 1))
    conf_low = np.tile([1.0, 0.2], (N, 1))
    a = run(KalmanSmoother(), z, conf)
    b = run(KalmanSmoother(), z, conf_low)
    assert np.std(np.diff(b[30:, 1], axis=0)) < np.std(np.diff(a[30:, 1], axis=0))
    assert np.allclose(a[:, 0], b[:, 0])   # the confident point is not affected


def test_variable_frame_intervals_and_reset():
    sm = KalmanSmoother()
    ts = np.cumsum(np.random.default_rng(3).uniform(0.01, 0.08, 100))
    for t in ts:
        out = sm.update(np.array([[10.0 + 100 * t, 5.0]]), None, t, FACE_PX)
    assert abs(out[0, 0] - (10 + 100 * ts[-1])) < 1.0
    sm.reset()
    assert np.allclose(sm.update(np.array([[0.0, 0.0]]), None, 0.0, FACE_PX), 0)


def test_face_size_normalisation():
    """The same relative noise on a face 4x larger is smoothed the same, relative to its size."""
    truth, z = noisy_static(sigma_px=1.0)
    small = run(KalmanSmoother(), z)
    sm = KalmanSmoother()
    big = np.stack([sm.update(4 * z[i], None, i / FPS, 4 * FACE_PX) for i in range(N)])
    assert np.allclose(big, 4 * small, rtol=1e-6, atol=1e-6)


def test_none_passes_through():
    _, z = noisy_static()
    assert np.allclose(run(NoSmoother(), z), z)


# ---- shape-aware stabilizer ------------------------------------------------------------------

def _real_face(data_300w):
    from models.data import load_faces
    return load_faces(data_300w, "test")[0].landmarks_px.astype(np.float64)


def test_shape_smoother_steadies_a_real_face_and_follows_head_motion(data_300w):
    face = _real_face(data_300w)
    rng = np.random.default_rng(4)
    still = face[None] + rng.normal(0, 0.7, (N, 68, 2))
    out = run(build_smoother("shape"), still)
    jitter_in = np.sqrt(np.mean(np.diff(still[30:], axis=0) ** 2))
    jitter_out = np.sqrt(np.mean(np.diff(out[30:], axis=0) ** 2))
    assert jitter_out < 0.2 * jitter_in, (jitter_in, jitter_out)
    assert np.abs(out[60:] - face).mean() < np.abs(still[60:] - face).mean()
    # a brisk head move (150 px/s): the rigid part follows with little lag
    t = np.arange(N) / FPS
    moving = face[None] + np.stack([150 * t, -60 * t], -1)[:, None, :]
    out = run(build_smoother("shape"), moving + rng.normal(0, 0.5, moving.shape))
    assert np.abs(out[60:] - moving[60:]).mean() < 1.5


def test_shape_smoother_lets_blinks_and_jaw_opening_through(data_300w):
    """A 5-frame blink and a held jaw opening, on a noisy still face: the smoothed landmarks still
    show them in the ARKit-named values the avatar receives."""
    from stream.expressions import ExpressionEstimator
    face = _real_face(data_300w)
    io = np.linalg.norm(face[36] - face[45])
    closed, opened = face.copy(), face.copy()
    for a, b in ((37, 41), (38, 40), (43, 47), (44, 46)):
        closed[a] = closed[b] = (face[a] + face[b]) / 2
    opened[[56, 57, 58, 65, 66, 67, 5, 6, 7, 8, 9, 10, 11]] += [0, 0.3 * io]
    seq = np.stack([face] * 40 + [closed] * 5 + [face] * 40 + [opened] * 15 + [face] * 20)
    rng = np.random.default_rng(5)
    out = run(build_smoother("shape"), seq + rng.normal(0, 0.3, seq.shape))
    est = ExpressionEstimator()
    est.calibrate(face)
    blink = max(est.blendshapes(out[i])["eyeBlinkLeft"] for i in range(40, 48))
    jaw = max(est.blendshapes(out[i])["jawOpen"] for i in range(85, 102))
    raw_jaw = est.blendshapes(opened)["jawOpen"]
    assert blink > 0.6, blink
    assert jaw > 0.8 * raw_jaw, (jaw, raw_jaw)
    assert est.blendshapes(out[-1])["eyeBlinkLeft"] < 0.15 and est.blendshapes(out[-1])["jawOpen"] < 0.1


def test_shape_smoother_falls_back_for_other_schemes():
    truth, z = noisy_static(k=478)
    out = run(build_smoother("shape"), z)
    assert out.shape == z.shape
    assert np.sqrt(np.mean(np.diff(out[30:], axis=0) ** 2)) < np.sqrt(np.mean(np.diff(z[30:], axis=0) ** 2))
