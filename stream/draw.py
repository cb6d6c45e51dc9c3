"""Drawing a tracked frame: landmarks, boxes, ids, pose axes, stats, the AR glasses. An output like the
others (the annotated video is drawn with it); the OpenCV window and the web page show it."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.frames import Frame
from stream.pose import camera_matrix

# iBUG-68 outline segments (jaw, brows, nose bridge, nose base, eyes closed, lips closed)
SEGMENTS_68 = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
               (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]


@dataclass
class DrawOptions:
    points: bool = True
    indices: bool = False
    mesh: bool = True
    box: bool = True
    pose_axes: bool = True
    stats: bool = True
    smoothed: bool = True      # draw the smoothed landmarks (else the raw ones)
    glasses: bool = False      # AR filter: glasses warped onto the face from the smoothed landmarks


def _sub(p: np.ndarray) -> np.ndarray:
    """Sub-pixel points -> cv2's fixed-point ints (shift=4: 1/16 px precision)."""
    return np.round((p + 0.0) * 16).astype(np.int32)


def _glasses_asset() -> tuple[np.ndarray, np.ndarray]:
    """The AR asset, drawn here (so it is ours, license-clean): BGR + alpha, 400x160, and where the
    face anchors sit relative to it: outer eye corners (36, 45) and the nose base corners (31, 35),
    placed with average iBUG proportions (nose base 0.55 inter-ocular below the eyes, +-0.13 apart)."""
    art = np.zeros((160, 400, 4), np.uint8)
    for cx in (105, 295):
        cv2.ellipse(art, (cx, 75), (85, 60), 0, 0, 360, (40, 40, 40, 150), -1, cv2.LINE_AA)    # tinted lens
        cv2.ellipse(art, (cx, 75), (85, 60), 0, 0, 360, (20, 20, 20, 255), 9, cv2.LINE_AA)     # frame
    cv2.ellipse(art, (200, 62), (25, 14), 0, 180, 360, (20, 20, 20, 255), 8, cv2.LINE_AA)        # bridge
    anchors = np.float32([[42, 78], [358, 78], [159, 252], [241, 252]])
    return art, anchors


_GLASSES = None


def draw_glasses(img: np.ndarray, pts68: np.ndarray) -> None:
    """Homography from the asset's anchors to the face's, then alpha-blend in place."""
    global _GLASSES
    if _GLASSES is None:
        _GLASSES = _glasses_asset()
    art, anchors = _GLASSES
    target = pts68[[36, 45, 31, 35]].astype(np.float32)
    hmat, _ = cv2.findHomography(anchors, target)
    if hmat is None:
        return
    h, w = img.shape[:2]
    warped = cv2.warpPerspective(art, hmat, (w, h), flags=cv2.INTER_LINEAR)
    alpha = warped[..., 3:4].astype(np.float32) / 255
    img[:] = (img * (1 - alpha) + warped[..., :3] * alpha).astype(np.uint8)


def draw_frame(frame: Frame, opts: DrawOptions, stats_text: list[str] | None = None) -> np.ndarray:
    img = frame.image.copy()
    h, w = img.shape[:2]
    for face in frame.faces:
        pts = face.smoothed_px if (opts.smoothed and face.smoothed_px is not None) else face.landmarks_px
        if opts.glasses and face.pose is not None:
            from models.schemes import to_68
            draw_glasses(img, to_68(pts))
        color = (80, 220, 80) if opts.smoothed else (60, 160, 255)
        if opts.box:
            x0, y0, x1, y1 = face.box.xyxy().astype(int)
            cv2.rectangle(img, (x0, y0), (x1, y1), (255, 180, 0), 1, cv2.LINE_AA)
            cv2.putText(img, f"id {face.track_id}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 180, 0), 1, cv2.LINE_AA)
        if opts.mesh and len(pts) == 68:
            for a, b, closed in SEGMENTS_68:
                cv2.polylines(img, [_sub(pts[a:b])], closed, (200, 200, 200), 1, cv2.LINE_AA, shift=4)
        if opts.points:
            r = 2 if len(pts) <= 100 else 1
            for p in _sub(pts):
                cv2.circle(img, tuple(p), r * 16, color, -1, cv2.LINE_AA, shift=4)
        if opts.points and face.pupils_px is not None and np.isfinite(face.pupils_px).all():
            for p in _sub(face.pupils_px):          # pupils: a ring, told apart from the landmarks
                cv2.circle(img, tuple(p), 3 * 16, (255, 120, 0), 1, cv2.LINE_AA, shift=4)
        if opts.indices:
            for i, p in enumerate(pts):
                cv2.putText(img, str(i), (int(p[0]) + 2, int(p[1]) - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.25,
                            (255, 255, 255), 1, cv2.LINE_AA)
        pose = face.pose_smoothed if opts.smoothed else face.pose
        if opts.pose_axes and pose is not None:
            axes = np.float64([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40]])
            proj, _ = cv2.projectPoints(axes, pose.rvec, pose.tvec, camera_matrix(w, h), None)
            o, *ends = proj.reshape(-1, 2)
            if np.all(np.isfinite(proj)) and np.abs(proj).max() < 10 * max(w, h):
                for end, col in zip(ends, [(0, 0, 255), (0, 255, 0), (255, 0, 0)]):
                    cv2.line(img, tuple(o.astype(int)), tuple(end.astype(int)), col, 2, cv2.LINE_AA)
            yaw, pitch, roll = pose.rotation_deg
            x0, _, _, y1 = face.box.xyxy().astype(int)
            cv2.putText(img, f"yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}", (x0, min(h - 4, y1 + 14)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    if opts.stats and stats_text:
        for i, line in enumerate(stats_text):
            y = 18 + 16 * i
            cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def stats_lines(frame: Frame, fps: float, dropped: int, smoothing: str, recording: bool) -> list[str]:
    t = frame.timings_ms
    stages = " ".join(f"{k} {v:.1f}" for k, v in t.items())
    return [f"{fps:.1f} fps  latency {frame.latency_ms():.0f} ms  faces {len(frame.faces)}  dropped {dropped}",
            f"ms: {stages}", f"smoothing {smoothing}{'  REC' if recording else ''}"]
