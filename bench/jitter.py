"""Jitter, lag and accuracy of the smoothed tracks on clips with known ground-truth motion.

    python run.py bench jitter [--faces 4]

Clips: a real annotated 300-W test face (ground-truth landmarks) moved by a known affine motion
(the demo clip's machinery): static, slow drift, fast head turn, sudden jump; 640x480 at 30 fps,
with fresh per-pixel camera noise in every frame (a still face on a real webcam is not a still image).
Every clip goes once through detector + tracker + landmarker (raw landmarks do not depend on the
smoother, since tracking follows the raw points); each smoother setting is then replayed on the
raw tracks with the frames' timestamps.
- jitter: RMS frame-to-frame change of the residual (prediction - truth) on the static clip, px
  and % of the inter-ocular distance;
- lag: the delay (frames, 0.1 steps) that best aligns the predicted track with the truth on the
  moving clips (minimum squared error of the shifted signal);
- accuracy: mean NME per frame;
- crop-position spread: the first still frame's tracker box moved over a 17 x 17 grid spanning
  +-2 image px (size fixed); RMS spread of each landmark around its mean over the grid, % IO.
  An equivariant landmarker would not move at all (the face did not move).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.data import load_faces
from models.detector import FaceBox, build_detector
from models.landmarkers import build_landmarker, crop_box
from models.schemes import to_68
from stream.demo import FRAME_SIZE, MotionConfig, face_matrix
from stream.smoothing import build_smoother
from stream.tracking import Tracker

FPS = 30.0
N_FRAMES = 90
FACE_PX = 150.0


@dataclass
class Clip:
    name: str
    frames: list[np.ndarray]
    truth: np.ndarray          # (T,68,2)


def _motion(name: str, t: np.ndarray) -> np.ndarray:
    """(T,5) motion parameters in [-1,1]: rotation, scale, shift x, shift y, brightness."""
    p = np.zeros((len(t), 5))
    if name == "slow drift":
        p[:, 2] = np.sin(2 * np.pi * 0.2 * t) * 0.5
        p[:, 3] = np.sin(2 * np.pi * 0.13 * t) * 0.3
    elif name == "fast turn":
        p[:, 0] = np.sin(2 * np.pi * 1.0 * t)           # +-12 deg at 1 Hz
        p[:, 2] = np.sin(2 * np.pi * 1.0 * t + 1) * 0.8  # +-48 px at 1 Hz
    elif name == "sudden jump":
        p[:, 2] = np.where(t < 1.5, -0.5, 0.5)           # 60 px jump
    return p


CAMERA_NOISE = 4.0   # grey levels of per-pixel sensor noise, new every frame, as a webcam has


def make_clips(face, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    image = cv2.imread(str(face.image_path))
    lo, hi = face.landmarks_px.min(0), face.landmarks_px.max(0)
    square = ((lo + hi)[0] / 2, (lo + hi)[1] / 2, float(max(hi - lo)))
    w, h = FRAME_SIZE
    t = np.arange(N_FRAMES) / FPS
    clips = []
    for name in ("static", "slow drift", "fast turn", "sudden jump"):
        frames, truth = [], []
        for p in _motion(name, t):
            m = face_matrix(square, np.array([w / 2, h / 2]), FACE_PX, p, MotionConfig())
            frame = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(60, 60, 60))
            noise = rng.normal(0, CAMERA_NOISE, frame.shape)
            frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
            truth.append(face.landmarks_px @ m[:, :2].T + m[:, 2])
        clips.append(Clip(name, frames, np.stack(truth)))
    return clips


def raw_tracks(clip: Clip, landmarker, detector) -> np.ndarray:
    """(T,68,2) raw landmarks (NaN where no face), tracked from the last landmarks as in the pipeline."""
    tracker = Tracker(detector)
    out = np.full((len(clip.frames), 68, 2), np.nan)
    conf = np.ones((len(clip.frames), 68))
    for i, img in enumerate(clip.frames):
        ids, boxes, _ = tracker.boxes(img, i)
        res = landmarker(img, boxes)
        tracker.update(ids, res)
        if res and res[0] is not None:
            out[i] = to_68(res[0].landmarks_px)
            conf[i] = res[0].confidence[:68] if len(res[0].confidence) == 68 else 1.0
    return out, conf


def smooth(raw: np.ndarray, conf: np.ndarray, mode: str, settings: dict) -> np.ndarray:
    sm = build_smoother(mode, settings)
    out = raw.copy()
    for i in range(len(raw)):
        if np.isfinite(raw[i]).all():
            side = float((raw[i].max(0) - raw[i].min(0)).max())
            out[i] = sm.update(raw[i], conf[i], i / FPS, side)
    return out


def lag_frames(pred: np.ndarray, truth: np.ndarray, max_lag: float = 8.0) -> float:
    """Delay of pred behind truth (frames), on the mean landmark position."""
    p, g = np.nanmean(pred, 1), truth.mean(1)
    t = np.arange(len(g), dtype=float)
    best, best_err = 0.0, np.inf
    for lag in np.arange(0, max_lag + 1e-9, 0.1):
        shifted = np.stack([np.interp(t - lag, t, g[:, k]) for k in range(2)], -1)
        valid = (t >= max_lag) & np.isfinite(p).all(1)
        err = np.mean((p[valid] - shifted[valid]) ** 2)
        if err < best_err:
            best, best_err = lag, err
    return float(best)


def metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    io = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    res = pred - truth
    d = np.diff(res, axis=0)
    jitter_px = float(np.sqrt(np.nanmean(np.sum(d ** 2, -1))))
    nme = np.nanmean(np.linalg.norm(res, axis=-1).mean(-1) / io) * 100
    return {"jitter_px": jitter_px, "jitter_nme": jitter_px / float(io.mean()) * 100, "nme": float(nme)}


def crop_spread(clip: Clip, landmarker, detector, grid_px: float = 2.0, steps: int = 17) -> float:
    """RMS spread (% IO) of the landmarks when the crop box of one still frame moves over a +-grid_px grid."""
    frame = clip.frames[0]
    tracker = Tracker(detector)
    _, boxes, _ = tracker.boxes(frame, 0)
    first = landmarker(frame, boxes[:1])
    if not first or first[0] is None:
        return float("nan")
    box = crop_box(first[0].landmarks_px)   # the box tracking would use
    offsets = np.linspace(-grid_px, grid_px, steps)
    pts = []
    for dy in offsets:
        shifted = [FaceBox(box.center_px + np.array([dx, dy]), box.side_px) for dx in offsets]
        pts += [to_68(r.landmarks_px) for r in landmarker(frame, shifted) if r is not None]
    pts = np.stack(pts)
    io = float(np.linalg.norm(clip.truth[0, 36] - clip.truth[0, 45]))
    return float(np.sqrt(np.mean(np.sum((pts - pts.mean(0)) ** 2, -1)))) / io * 100


SWEEPS = {
    "kalman": ("process_noise", [0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100]),
    "one_euro": ("min_cutoff", [0.01, 0.03, 0.1, 0.3, 1, 3, 10]),
    "shape": ("rigid_beta", [30, 80, 150, 300, 600, 1000]),   # its shape filter barely moves the still jitter
}
MODES = ("kalman", "one_euro", "shape")


def _landmarker(name: str, weights: Path | None):
    """'hih', 'hih x2' / 'hih x4' (crop views averaged per face, models/engine.py), 'mediapipe'."""
    if name.startswith("hih"):
        return build_landmarker("hih", weights=weights, views=int(name.partition(" x")[2] or 1))
    return build_landmarker(name)


def run_jitter(out_dir: Path, n_faces: int = 4, data: Path | None = None, landmarkers=("hih", "hih x2", "mediapipe"),
               defaults: dict | None = None, weights: Path | None = None, log=print) -> str:
    data = data or Path(__file__).resolve().parents[2] / "shared/data/300w"
    faces = load_faces(data, "test")
    faces = [faces[i] for i in np.linspace(0, len(faces) - 1, n_faces).astype(int)]
    detector = build_detector("blazeface")
    defaults = {m: {} for m in MODES} | (defaults or {})
    results: dict = {}
    for lm_name in landmarkers:
        lm = _landmarker(lm_name, weights)
        per_clip: dict[str, list] = {}
        spreads = []
        for n, face in enumerate(faces):
            log(f"jitter: {lm_name}, face {n + 1}/{len(faces)}")
            for clip in make_clips(face, seed=n):
                raw, conf = raw_tracks(clip, lm, detector)
                per_clip.setdefault(clip.name, []).append((raw, conf, clip.truth))
                if clip.name == "static":
                    spreads.append(crop_spread(clip, lm, detector))
        lm.close()
        rows = []
        settings_list = [("none", {}, None)] + [(m, defaults[m], "default") for m in MODES]
        for mode, (key, values) in SWEEPS.items():
            settings_list += [(mode, {**defaults[mode], key: v}, v) for v in values]
        for mode, settings, tag in settings_list:
            stat = [metrics(smooth(r, c, mode, settings), t) for r, c, t in per_clip["static"]]
            moving = {name: [(metrics(smooth(r, c, mode, settings), t), lag_frames(smooth(r, c, mode, settings), t))
                             for r, c, t in v] for name, v in per_clip.items() if name != "static"}
            rows.append({"mode": mode, "setting": tag, "settings": settings,
                         "jitter_px": float(np.mean([s["jitter_px"] for s in stat])),
                         "jitter_nme": float(np.mean([s["jitter_nme"] for s in stat])),
                         "static_nme": float(np.mean([s["nme"] for s in stat])),
                         **{f"lag_{k}": float(np.mean([lag for _, lag in v])) for k, v in moving.items()},
                         **{f"nme_{k}": float(np.mean([m["nme"] for m, _ in v])) for k, v in moving.items()}})
        results[lm_name] = {"rows": rows, "crop_spread_io": float(np.nanmean(spreads))}
    return _write(results, out_dir, len(faces))


def _write(results: dict, out_dir: Path, n_faces: int) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "jitter.json").write_text(json.dumps(results, indent=1))
    lines = [f"Jitter / lag / accuracy, {n_faces} real 300-W test faces x 4 clips of {N_FRAMES} frames at {FPS:.0f} fps, "
             f"face {FACE_PX:.0f} px, camera noise {CAMERA_NOISE:.0f} grey levels; the tracker's own detector and crops", "",
             "| landmarker | smoothing | still jitter px | still jitter % IO | lag slow (fr) | lag turn (fr) | lag jump (fr) "
             "| NME still | NME turn | crop spread % IO |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lm_name, res in results.items():
        for r in res["rows"]:
            if r["setting"] in (None, "default"):
                lines.append(f"| {lm_name} | {r['mode']}{'' if r['setting'] is None else ' (default)'} | {r['jitter_px']:.3f} | "
                             f"{r['jitter_nme']:.3f} | {r['lag_slow drift']:.1f} | {r['lag_fast turn']:.1f} | "
                             f"{r['lag_sudden jump']:.1f} | {r['static_nme']:.2f} | {r['nme_fast turn']:.2f} | "
                             f"{res['crop_spread_io']:.2f} |")
    md = "\n".join(lines) + "\n"
    (out_dir / "jitter.md").write_text(md)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for lm_name, res in results.items():
        rows = res["rows"]
        for mode, marker in zip(MODES, "osd"):
            sweep = [r for r in rows if r["mode"] == mode and r["setting"] not in (None, "default")]
            ax.plot([r["lag_fast turn"] for r in sweep], [r["jitter_nme"] for r in sweep], marker + "-", label=f"{lm_name} {mode} sweep")
            d = next(r for r in rows if r["mode"] == mode and r["setting"] == "default")
            ax.scatter([d["lag_fast turn"]], [d["jitter_nme"]], s=160, marker="*", zorder=5, label=f"{lm_name} {mode} default")
        raw = next(r for r in rows if r["mode"] == "none")
        ax.scatter([raw["lag_fast turn"]], [raw["jitter_nme"]], s=80, marker="x", zorder=5, label=f"{lm_name} raw")
    ax.set_xlabel("lag on the fast head turn (frames)"); ax.set_ylabel("jitter on the still clip (% of eye distance, RMS)")
    ax.set_yscale("log"); ax.grid(alpha=0.3); ax.legend(fontsize=6)
    fig.tight_layout(); fig.savefig(out_dir / "jitter.png", dpi=90); plt.close(fig)
    return md
