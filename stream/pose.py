"""Head pose from 2D landmarks with cv2.solvePnP against a generic 3D face template."""
from __future__ import annotations

import cv2
import numpy as np

from models.schemes import to_68
from stream.frames import HeadPose

# A generic 3D face (mm, x right, y up, z towards the camera), the widely used 6-point template:
# nose tip, chin, outer eye corners, mouth corners; with their iBUG-68 indices.
TEMPLATE_3D = np.array([
    (0.0, 0.0, 0.0), (0.0, -63.6, -12.5), (-43.3, 32.7, -26.0), (43.3, 32.7, -26.0),
    (-28.9, -28.9, -24.1), (28.9, -28.9, -24.1)], np.float64)
TEMPLATE_IDX_68 = np.array([30, 8, 36, 45, 48, 54])


def template_points(landmarks_px: np.ndarray) -> np.ndarray:
    """The 6 template points of a 68- or 478-point face."""
    return to_68(landmarks_px)[TEMPLATE_IDX_68].astype(np.float64)


def camera_matrix(width: int, height: int) -> np.ndarray:
    """A pinhole guess: focal length = image width, principal point at the centre."""
    return np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]], np.float64)


def rotation_to_euler(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues vector -> (yaw, pitch, roll) degrees."""
    r, _ = cv2.Rodrigues(rvec)
    # template y is up, image y is down: flip to the usual head frame
    r = r @ np.diag([1.0, -1.0, -1.0])
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    yaw = np.degrees(np.arcsin(-np.clip(r[2, 0], -1, 1)))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll])


def estimate_pose(landmarks_px: np.ndarray, image_size: tuple[int, int], near: HeadPose | None = None) -> HeadPose | None:
    """The head pose that best reprojects the template (EPnP to start, then Levenberg-Marquardt), or
    None for a landmark scheme without the template points (neither 68 nor Face Mesh). `near`: a pose
    of nearly the same points (the raw ones for the smoothed, last frame's for a tracked face), which
    replaces the EPnP start."""
    if len(landmarks_px) not in (68, 468, 478):
        return None
    w, h = image_size
    pts, cam = template_points(landmarks_px), camera_matrix(w, h)
    if near is None:
        ok, rvec, tvec = cv2.solvePnP(TEMPLATE_3D, pts, cam, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            return None
    else:
        rvec, tvec = near.rvec.reshape(3, 1).copy(), near.tvec.reshape(3, 1).copy()
    ok, rvec, tvec = cv2.solvePnP(TEMPLATE_3D, pts, cam, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    rvec, tvec = rvec.ravel(), tvec.ravel()
    return HeadPose(rotation_to_euler(rvec), tvec, rvec, tvec)
