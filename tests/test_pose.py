"""Head pose: the template fit recovers a known pose, and a fit started from a nearby pose (last
frame's, as the pipeline does for a tracked face) ends where a fresh EPnP start does."""
import cv2
import numpy as np
import pytest

from stream.pose import TEMPLATE_3D, TEMPLATE_IDX_68, camera_matrix, estimate_pose

SIZE = (640, 480)
UPRIGHT = np.diag([1.0, -1.0, -1.0])     # template y is up and z towards the camera; image y is down


def _rvec(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """The Rodrigues vector of an upright head turned by these angles."""
    turn = cv2.Rodrigues(np.radians([pitch_deg, yaw_deg, roll_deg]))[0]
    return cv2.Rodrigues(UPRIGHT @ turn)[0].ravel()


def _face(rvec: np.ndarray, tvec: np.ndarray, noise_px: float = 0.0, seed: int = 0) -> np.ndarray:
    """68 points whose template points are the template projected at (rvec, tvec); the fit reads no other."""
    pts, _ = cv2.projectPoints(TEMPLATE_3D, rvec, tvec, camera_matrix(*SIZE), None)
    lm = np.full((68, 2), 320.0, np.float32)
    lm[TEMPLATE_IDX_68] = pts.reshape(-1, 2) + np.random.default_rng(seed).normal(0, noise_px, (6, 2))
    return lm


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 10, 5), (-45, -10, 15)])
def test_the_fit_recovers_a_known_pose(angles):
    rvec, tvec = _rvec(*angles), np.array([10.0, -20.0, 600.0])
    pose = estimate_pose(_face(rvec, tvec), SIZE)
    np.testing.assert_allclose(cv2.Rodrigues(pose.rvec)[0], cv2.Rodrigues(rvec)[0], atol=1e-3)
    np.testing.assert_allclose(pose.translation, tvec, atol=0.5)


def test_a_fit_from_last_frames_pose_ends_where_a_fresh_fit_does():
    # a head turning 2 degrees a frame, with 0.5 px landmark noise: each frame's fit starts from the last
    tvec, last = np.array([0.0, 0.0, 550.0]), None
    for i, yaw_deg in enumerate(np.arange(-40, 41, 2.0)):
        lm = _face(_rvec(yaw_deg, 5.0), tvec, noise_px=0.5, seed=i)
        fresh, tracked = estimate_pose(lm, SIZE), estimate_pose(lm, SIZE, near=last)
        np.testing.assert_allclose(tracked.rotation_deg, fresh.rotation_deg, atol=0.05)
        np.testing.assert_allclose(tracked.translation, fresh.translation, atol=0.2)
        last = tracked
