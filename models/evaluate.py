"""Evaluation on held-out annotated faces: our decodes and competitors on the same faces and boxes.

Two protocols, every method on the same boxes, each applying its own margin convention (ours 1.3x,
PFLD 1.2x, Face Mesh 2x):
- "detector" (what a user gets for a photo): the project's detector on the whole image and on 3 x 3
  tiles (models.detector.find_faces, as for a still), the detection nearest the
  annotated face, then each method re-crops from its own landmarks until the box settles
  (models.landmarkers.settle), as the tracker does for a new face or a photo. A face the detector
  misses counts as missed (the faces column says how many were found).
- "gt-box": the ground-truth 68-point landmark-extent square, as the training crops (optimistic).
Predictions and ground truth are compared as 68 iBUG points in original image pixels; NME is
normalised by the outer-eye-corner distance.
Index maps: WFLW-98 -> 68 and Face Mesh 478 -> 68 in models/schemes.py.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from models import crop
from models.data import Face
from models.detector import FaceBox, build_detector, find_faces
from models.eyes import with_eye_outline
from models.landmarkers import HIHLandmarker, LandmarkResult, MediaPipeLandmarker, settle
from models.metrics import ced, nme_per_face, summarize
from models.schemes import SCHEMES, to_68

PFLD_ONNX = Path(__file__).resolve().parents[2] / "shared/data/checkpoints/pfld_ghostone_wflw98/PFLD_GhostOne_112_1_opt_sim.onnx"


class PFLDLandmarker:
    """PFLD-GhostOne (WFLW-98) on onnxruntime; I/O as its SOURCE.md: BGR, [-1,1], 112 px, 1.2x square."""

    name = "PFLD-GhostOne (98->68)"

    def __init__(self, path: Path = PFLD_ONNX, threads: int = 0):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads      # 0: onnxruntime's own choice
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray, boxes: list[FaceBox]) -> list[LandmarkResult]:
        out = []
        for box in boxes:
            m = crop.similarity(box.center_px, box.side_px * 1.2, 112)
            x = crop.warp(image, m, 112).astype(np.float32) / 255
            x = ((x - 0.5) / 0.5).transpose(2, 0, 1)[None]
            pts = self.sess.run(None, {"input": x})[0].reshape(98, 2)
            # normalised [0,1] of the crop -> crop pixel centres -> image px
            img_pts = to_68(crop.transform_points(crop.invert(m), pts.astype(np.float64) * 112 - 0.5))
            out.append(LandmarkResult(img_pts, np.ones(68, np.float32), box))
        return out


@dataclass
class EvalResult:
    rows: dict[str, dict]          # method -> summary (nme, fr, auc, n, detected)
    per_face: dict[str, np.ndarray]
    subsets: dict[str, dict[str, float]]
    pupils: dict[str, dict] = field(default_factory=dict)   # method -> pupil summary (faces with annotated pupils)
    shapes: dict[str, dict[str, float]] = field(default_factory=dict)   # method -> {shape: correlation with the annotation's}
    blinks: dict[str, dict[str, int]] = field(default_factory=dict)     # method -> closed_eyes()


WFLW_PUPILS = [96, 97]      # the pupil of the eye drawn by 60-67 (iBUG 36-41), then 68-75
WFLW_EYES = (list(range(60, 68)), list(range(68, 76)))
EYE_OUTLINE_BASELINE = "centre of the true eye outline"


def pupil_summary(pred: np.ndarray, gt: np.ndarray, io: np.ndarray) -> dict:
    """pred, gt (N,2,2) px (NaN rows = not found), io (N,) -> mean error % IO, and the share of faces whose
    worse eye is within 0.05 IO (Jesorsky's e_max, with IO for the normaliser)."""
    ok = np.isfinite(pred).all((1, 2))
    err = np.linalg.norm(pred[ok] - gt[ok], axis=-1) / io[ok, None]
    return {"mean": 100 * float(err.mean()), "median": 100 * float(np.median(err)),
            "within_005": 100 * float((err.max(1) <= 0.05).mean()), "faces": int(ok.sum())}


def pupil_table(found: dict[str, np.ndarray], gt: np.ndarray, io: np.ndarray) -> dict[str, dict]:
    """method -> (N,2,2) px (NaN rows = not found) -> a pupil_summary per method, each on the faces it
    found; with several methods, again on the faces all of them found (a method that finds more, harder
    faces is not compared on those)."""
    rows = {name: pupil_summary(pred, gt, io) for name, pred in found.items()}
    if len(found) > 1:
        every = np.logical_and.reduce([np.isfinite(pred).all((1, 2)) for pred in found.values()])
        rows |= {f"{name}, on the faces all find": pupil_summary(np.where(every[:, None, None], pred, np.nan), gt, io)
                 for name, pred in found.items()}
    return rows


def dlib_predictions(faces: list[Face], python: str) -> tuple[np.ndarray, np.ndarray]:
    """Run bench/dlib_landmarks.py in the benchmark environment (dlib is not a runtime dependency)."""
    import subprocess
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="hihtrack-dlib-"))
    jobs = [{"image": str(f.image_path), "center": FaceBox.from_landmarks(to_68(f.landmarks_px)).center_px.tolist(),
             "side": FaceBox.from_landmarks(to_68(f.landmarks_px)).side_px} for f in faces]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    script = Path(__file__).resolve().parents[1] / "bench" / "dlib_landmarks.py"
    r = subprocess.run([python, str(script), str(tmp / "jobs.json"), str(tmp / "out.npz")], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dlib competitor failed ({python}): {r.stderr.strip().splitlines()[-1] if r.stderr else '?'}; "
                           "see bench/dlib_landmarks.py for its environment")
    with np.load(tmp / "out.npz") as z:
        return z["landmarks"].astype(np.float64), z["detected"]


DLIB_NAME = "dlib 68-point (its own HOG detector)"


MEDIAPIPE_NAME = "MediaPipe Face Mesh (478->68)"
PROTOCOLS = ("detector", "gt-box")
# iBUG-68 parts reported apart: part of the jaw error on WFLW is its contour convention, not pose
PARTS = {"inner": np.setdiff1d(np.arange(68), SCHEMES[68].jaw), "jaw": np.array(SCHEMES[68].jaw)}
COMPETITORS = ("mediapipe", "pfld", "dlib")
# the shapes an avatar shows most, reported by write_report when eval computes shapes
REPORTED_SHAPES = ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthClose",
                   "mouthPucker", "mouthFunnel", "browDownLeft", "browDownRight", "browInnerUp")


def _nearest_detection(boxes: list[FaceBox], gt: FaceBox) -> FaceBox | None:
    near = [b for b in boxes if np.abs(b.center_px - gt.center_px).max() < gt.side_px / 2]
    return min(near, key=lambda b: np.linalg.norm(b.center_px - gt.center_px)) if near else None


def shape_correlations(pred: np.ndarray, gt: np.ndarray, shapes: Callable[[np.ndarray], dict[str, float]]) -> dict[str, float]:
    """pred, gt (N,68,2) px (NaN rows = not found) -> {shape: Pearson r across the faces found between the
    shape computed from the prediction and from the annotation}; NaN for a shape that never varies."""
    ok = np.isfinite(pred).all((1, 2))
    ours, truth = [shapes(q) for q in pred[ok]], [shapes(g) for g in gt[ok]]
    out = {}
    for k in ours[0] if ours else []:
        a, b = np.array([o[k] for o in ours]), np.array([t[k] for t in truth])
        out[k] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return out


# eyeBlink from the annotation above CLOSED: an eye clearly closed; below OPEN: clearly open (squints
# between are left out); from a method's landmarks above SHOWN: the avatar shows it closed
BLINK_SHAPES, CLOSED, OPEN, SHOWN = ("eyeBlinkLeft", "eyeBlinkRight"), 0.8, 0.2, 0.5


def closed_eyes(pred: np.ndarray, gt: np.ndarray, shapes: Callable[[np.ndarray], dict[str, float]]) -> dict[str, int]:
    """pred, gt (N,68,2) px (NaN rows = not found) -> over the faces found: the eyes annotated clearly
    closed and how many of them the method shows closed; the eyes annotated clearly open and how many
    of them it shows closed. Whether an avatar blinks when its user does, and only then."""
    ok = np.isfinite(pred).all((1, 2))
    ours = np.array([[shapes(q)[k] for k in BLINK_SHAPES] for q in pred[ok]]).reshape(-1, 2) > SHOWN
    truth = np.array([[shapes(g)[k] for k in BLINK_SHAPES] for g in gt[ok]]).reshape(-1, 2)
    closed, open_ = truth > CLOSED, truth < OPEN
    return {"closed": int(closed.sum()), "seen_closed": int((ours & closed).sum()),
            "open": int(open_.sum()), "false_closed": int((ours & open_).sum())}


def evaluate(faces: list[Face], weights: str | Path, competitors: list[str], decodes=("hih", "dark", "argmax"),
             device: str = "cpu", dlib_python: str | None = None, protocol: str = "detector",
             refine_passes: int = 3, views=(1,), log=lambda message: None,
             shapes: Callable[[np.ndarray], dict[str, float]] | None = None) -> EvalResult:
    """shapes: when given, a face's expression values from its 68 points (the front end passes the
    tracker's own); each method's values are then correlated with the annotation's (EvalResult.shapes)."""
    methods = {f"hihtrack ({d} decode)": HIHLandmarker(weights, device, backend="torch", decode=d, views=1)
               for d in decodes if 1 in views or d != "hih"}
    methods |= {f"hihtrack (hih decode, {v} views)": HIHLandmarker(weights, device, backend="torch", views=v)
                for v in views if v > 1}
    if "mediapipe" in competitors:
        methods[MEDIAPIPE_NAME] = MediaPipeLandmarker()
    if "pfld" in competitors and PFLD_ONNX.exists():
        methods[PFLDLandmarker.name] = PFLDLandmarker()
    detector = build_detector("blazeface") if protocol == "detector" else None
    preds: dict[str, list] = {name: [] for name in methods}
    has_pupils = faces[0].landmarks_px.shape[0] == 98
    # each method's eyes (models.eyes.Eyes, None where the face was not found), when something reads them:
    # the pupils, and the outline the tracker's eye shapes are measured on
    eyes: dict[str, list] = {name: [] for name, lm in methods.items() if hasattr(lm, "eyes")} \
        if has_pupils or shapes is not None else {}
    gts = []
    for n, f in enumerate(faces):
        if n % 50 == 0:
            log(f"{protocol} protocol: face {n}/{len(faces)}")
        image = cv2.imread(str(f.image_path))
        gt68 = to_68(f.landmarks_px)
        gts.append(gt68)
        box = FaceBox.from_landmarks(gt68)
        if detector is not None:
            box = _nearest_detection(find_faces(detector, image), box)
        for name, lm in methods.items():
            res = lm(image, [box]) if box is not None else [None]
            if detector is not None:
                res = settle(lm, image, res, refine_passes)
            preds[name].append(None if res[0] is None else to_68(res[0].landmarks_px).astype(np.float64))
            if name in eyes:
                found = lm.eyes(image, [res[0].landmarks_px]) if res[0] is not None else None
                eyes[name].append(found[0] if found else None)
    gt = np.stack(gts)
    detected_override = {}
    if "dlib" in competitors:
        pts, det = dlib_predictions(faces, dlib_python or "python3")
        preds[DLIB_NAME] = list(pts)
        detected_override[DLIB_NAME] = int(det.sum())
    ocular = SCHEMES[68].ocular
    rows, per_face, parts, shape_rows, blinks = {}, {}, {}, {}, {}
    for name, p in preds.items():
        ok = np.array([q is not None for q in p])
        arr = np.stack([q if q is not None else np.full((68, 2), np.nan) for q in p])
        if shapes is not None:
            measured = np.stack([with_eye_outline(q, e.outline_px) if e is not None else q
                                 for q, e in zip(arr, eyes[name])]) if name in eyes else arr
            shape_rows[name] = shape_correlations(measured, gt, shapes)
            blinks[name] = closed_eyes(measured, gt, shapes)
        nme = nme_per_face(arr[ok], gt[ok], ocular)
        per_face[name] = np.where(ok, 0, np.nan)
        per_face[name][ok] = nme
        parts[name] = {}
        for part, idx in PARTS.items():
            parts[name][part] = np.full(len(ok), np.nan)
            parts[name][part][ok] = nme_per_face(arr[ok][:, idx], gt[ok][:, idx], ocular, gt[ok])
        rows[name] = {**summarize(nme), "detected": detected_override.get(name, int(ok.sum())),
                      **{part: 100 * float(np.nanmean(v)) for part, v in parts[name].items()}}
    subsets = {}
    selections = {a: np.array([f.attributes.get(a, 0) == 1 for f in faces]) for a in sorted({k for f in faces for k in f.attributes})}
    selections |= {s: np.array([f.subset == s for f in faces]) for s in sorted({f.subset for f in faces})}
    for s, sel in selections.items():
        if 0 < sel.sum() < len(faces):
            subsets[s] = {name: {"nme": 100 * float(np.nanmean(v[sel])), "fr": _failure_rate(v[sel]),
                                 **{part: 100 * float(np.nanmean(parts[name][part][sel])) for part in PARTS}}
                          for name, v in per_face.items()}
    pupil_rows = {}
    if has_pupils:
        true = np.stack([f.landmarks_px[WFLW_PUPILS] for f in faces]).astype(np.float64)
        io = np.linalg.norm(gt[:, ocular[0]] - gt[:, ocular[1]], axis=-1)
        found = {name: np.stack([e.pupils_px if e is not None else np.full((2, 2), np.nan) for e in v]).astype(np.float64)
                 for name, v in eyes.items() if v}
        pupil_rows = pupil_table(found, true, io)
        outline = np.stack([[f.landmarks_px[e].mean(0) for e in WFLW_EYES] for f in faces]).astype(np.float64)
        pupil_rows[EYE_OUTLINE_BASELINE] = pupil_summary(outline, true, io)
    return EvalResult(rows, per_face, subsets, pupil_rows, shape_rows, blinks)


# How far the crop slides: 12.5 % of its width, 4 heatmap cells at a 128 px input (3 at 96 px). Given as a
# share of the crop, not in cells: points that come within a cell of the crop's edge step back at any
# input size, and 4 cells of a 96 px crop take the outermost jaw points there (bench/RESULTS.md, The
# model table: where the steps back happen).
SLIDE_SHARE = 0.125


@dataclass
class SlidingCrop:
    """How one weights file's landmarks move as the crop slides right by SLIDE_SHARE of its width in
    0.2-cell steps, on a real face (models.evaluate.sliding_crop). A network is not exactly equivariant:
    the steps are compared with each landmark's own mean step."""

    monotone_share: float       # landmarks that move left at every step
    worst_step_back: float      # the most negative step / mean step (0 or above: none moved back)
    within_2x_share: float      # landmarks whose largest step is at most 2x their mean step
    worst_jump: float           # the largest step / mean step over all landmarks


def slides_smooth(traces: list[SlidingCrop]) -> bool:
    """The bar shipped weights meet, over the slides from several start boxes: no jump when a point's
    integer peak changes cell. Medians, since one slide alone passes or fails on a 3 % change of its
    box (two weights files each passed 4 of 9 slides on one face, not the same 4: bench/RESULTS.md,
    Closed eyes)."""
    median = lambda values: float(np.median(values))  # noqa: E731
    return (min(t.monotone_share for t in traces) >= 0.9 and min(t.worst_step_back for t in traces) > -1
            and median([t.within_2x_share for t in traces]) >= 0.85 and median([t.worst_jump for t in traces]) < 3)


def sliding_crop(weights: str | Path | None, image_bgr: np.ndarray, scales=(0.97, 1.0, 1.03),
                 offsets_cells=(-0.5, 0.0, 0.5)) -> list[SlidingCrop]:
    """The sliding-crop traces of `weights` (None: the default) on the first face the detector finds in
    `image_bgr`: one per start box, the box settled from the detection as a new face's is, scaled by each
    of `scales` and moved across the slide by each of `offsets_cells` heatmap cells (torch backend: the
    training checkpoints)."""
    lm = HIHLandmarker(weights, device="cpu", backend="torch")
    first = settle(lm, image_bgr, lm(image_bgr, build_detector("blazeface")(image_bgr)[:1]))[0]
    eng = lm.engine
    lo, hi = first.landmarks_px.min(0), first.landmarks_px.max(0)
    traces = []
    for scale in scales:
        side = scale * float((hi - lo).max())
        crop_px = side * eng.crop_scale                                # the crop's width in image px
        cell_px = eng.stride * crop_px / eng.input_px                  # one heatmap cell in image px
        for offset in offsets_cells:
            start = (lo + hi) / 2 + [0, offset * cell_px]
            xs = []
            for dx in np.arange(0, SLIDE_SHARE * crop_px, 0.2 * cell_px):
                m = eng.crop_matrices((start + [dx, 0])[None], np.array([side]))
                xs.append(eng.infer(eng.crops(image_bgr, m))[0][0, :, 0])
            steps = -np.diff(np.array(xs), axis=0)                         # the crop moves right: points move left
            ratio = steps / steps.mean(0)
            traces.append(SlidingCrop(float((steps > 0).all(0).mean()), float(ratio.min()),
                                      float((ratio.max(0) <= 2).mean()), float(ratio.max())))
    return traces


def _failure_rate(nme: np.ndarray, limit: float = 0.1) -> float:
    """FR@limit % over the faces found (NaN = missed)."""
    found = nme[np.isfinite(nme)]
    return 100 * float((found > limit).mean()) if len(found) else float("nan")


def write_report(res: EvalResult, out_dir: Path, title: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"### {title}", "", "| method | NME % | inner 17-67 | jaw 0-16 | FR@0.1 % | AUC@0.1 | faces |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res.rows.items():
        lines.append(f"| {name} | {r['nme']:.2f} | {r['inner']:.2f} | {r['jaw']:.2f} | {r['fr']:.2f} | {r['auc']:.3f} "
                     f"| {r['detected']}/{len(res.per_face[name])} |")
    if res.subsets:
        names = list(res.rows)
        lines += ["", "NME % (inner / jaw) per subset, faces found only", "",
                  "| subset | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for s, v in res.subsets.items():
            lines.append(f"| {s} | " + " | ".join(f"{v[n]['nme']:.2f} ({v[n]['inner']:.2f} / {v[n]['jaw']:.2f})"
                                                  for n in names) + " |")
    if res.pupils:
        lines += ["", "Pupils (annotated 96, 97): error % of the inter-ocular distance",
                  "", "| method | mean | median | both eyes within 0.05 IO | faces |", "|---|---|---|---|---|"]
        for name, r in res.pupils.items():
            lines.append(f"| {name} | {r['mean']:.2f} | {r['median']:.2f} | {r['within_005']:.1f} % | {r['faces']} |")
    if res.shapes:
        names = list(res.shapes)
        lines += ["", "Expression shapes: correlation, across the faces found, of each shape computed from the method's "
                  "landmarks (hihtrack's eyes: with its eye network's outline, models.eyes.with_eye_outline) with the "
                  "same shape computed from the annotation", "",
                  "| shape | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for k in REPORTED_SHAPES:
            if all(k in res.shapes[n] for n in names):
                lines.append(f"| {k} | " + " | ".join(f"{res.shapes[n][k]:.3f}" for n in names) + " |")
        if res.blinks and all(n in res.blinks for n in names):
            blinks = [res.blinks[n] for n in names]
            lines.append(f"| eyes annotated closed (eyeBlink > {CLOSED}) shown closed (> {SHOWN}) | "
                         + " | ".join(f"{b['seen_closed']} of {b['closed']}" for b in blinks) + " |")
            lines.append(f"| eyes annotated open (< {OPEN}) shown closed | "
                         + " | ".join(f"{b['false_closed']} of {b['open']}" for b in blinks) + " |")
    md = "\n".join(lines) + "\n"
    slug = "eval_" + re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    (out_dir / f"{slug}.md").write_text(md)
    (out_dir / f"{slug}.json").write_text(json.dumps({"rows": res.rows, "subsets": res.subsets, "pupils": res.pupils,
                                                      "shapes": res.shapes, "blinks": res.blinks}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in res.per_face.items():
        t, c = ced(v[np.isfinite(v)])
        ax.plot(t * 100, c * len(v[np.isfinite(v)]) / len(v), label=f"{name} ({res.rows[name]['nme']:.2f})")
    ax.set_xlabel("NME %"); ax.set_ylabel("fraction of faces"); ax.set_title(f"CED: {title}"); ax.legend(fontsize=7)
    ax.grid(alpha=0.3); fig.tight_layout(); fig.savefig(out_dir / f"{slug}_ced.png", dpi=90); plt.close(fig)
    return md
