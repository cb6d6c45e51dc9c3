"""Drawing shared by the OpenCV window and the Gradio app: landmarks, boxes, ids, pose axes, stats."""
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


def _sub(p: np.ndarray) -> np.ndarray:
    """Sub-pixel points -> cv2's fixed-point ints (shift=4: 1/16 px precision)."""
    return np.round((p + 0.0) * 16).astype(np.int32)


def draw_frame(frame: Frame, opts: DrawOptions, stats_text: list[str] | None = None) -> np.ndarray:
    img = frame.image.copy()
    h, w = img.shape[:2]
    for face in frame.faces:
        pts = face.smoothed_px if (opts.smoothed and face.smoothed_px is not None) else face.landmarks_px
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
