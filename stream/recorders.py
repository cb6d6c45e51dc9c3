"""Landmark recordings: CSV (OpenFace 2.0 style), JSON Lines and compressed NumPy.

A dedicated writer thread with a bounded queue writes rows, so a slow disk never stalls the
pipeline; rows that would not fit are counted, never silently lost. CSV and JSONL are flushed
every `flush_every_s` and closed on every ending, so a crash leaves a readable file up to the last
flush. The .npz is rewritten atomically at each flush. Metadata goes to a `.meta.json` sidecar.
"""
from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.schema import UserError
from stream.frames import Frame

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".npz": "npz"}


class RecordError(UserError, ValueError):
    pass


@dataclass
class RecordMeta:
    scheme: str
    num_points: int
    model: str
    weights_sha256: str | None
    source: str
    fps: float | None
    image_size: tuple[int, int] | None = None
    smoothing: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)       # the tracker's settings that shape the landmarks
    expressions: list[str] = field(default_factory=list)   # shape values kept per face, by name (record_expressions)


def _pose_cols(face) -> list[float]:
    p = face.pose
    if p is None:
        return [float("nan")] * 6
    return [*np.radians(p.rotation_deg[[1, 0, 2]]).tolist(), *p.translation.tolist()]  # OpenFace: Rx(pitch), Ry(yaw), Rz


def _with_pupils(points: np.ndarray, pupils: np.ndarray | None, k: int) -> np.ndarray:
    """(K,2) points, then the pupils when the recording has room for them (NaN when not found)."""
    pts = np.asarray(points, np.float32)
    if k == len(pts) + 2:
        pts = np.concatenate([pts, pupils if pupils is not None else np.full((2, 2), np.nan)]).astype(np.float32)
    return pts


class Recorder:
    def __init__(self, path: str | Path, meta: RecordMeta, fmt: str | None = None, overwrite: bool = False,
                 flush_every_s: float = 1.0, queue_size: int = 256):
        self.path = Path(path)
        self.fmt = fmt or FORMATS.get(self.path.suffix.lower())
        if self.fmt not in FORMATS.values():
            raise RecordError(f"cannot tell the recording format of {self.path.name}; use .csv, .jsonl or .npz "
                              "or pass --record-format")
        if self.path.exists() and not overwrite:
            raise RecordError(f"{self.path} already exists; choose another name or pass --overwrite")
        self.meta = meta
        self.flush_every_s = flush_every_s
        self.q: queue.Queue = queue.Queue(queue_size)
        self.lost_rows = 0
        self.rows = 0
        self.paused = False            # a UI's record toggle: frames are not written while paused
        self._npz: list[dict] = []
        self._file = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            Path(str(self.path) + ".meta.json").write_text(json.dumps(meta.__dict__, default=str, indent=1))
            if self.fmt in ("csv", "jsonl"):
                self._file = open(self.path, "w", newline="")
        except OSError as e:
            raise RecordError(f"cannot write the recording {self.path} ({e.strerror or e.__class__.__name__}); "
                              "choose a path in a folder you can write to") from None
        if self.fmt in ("csv", "jsonl"):
            if self.fmt == "csv":
                self._csv = csv.writer(self._file)
                k = meta.num_points
                self._csv.writerow(["frame", "timestamp", "face_id", "confidence", "success",
                                    "pose_Rx", "pose_Ry", "pose_Rz", "pose_Tx", "pose_Ty", "pose_Tz"]
                                   + [f"x_{i}" for i in range(k)] + [f"y_{i}" for i in range(k)]
                                   + [f"sx_{i}" for i in range(k)] + [f"sy_{i}" for i in range(k)] + meta.expressions)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    # called from the consumer thread
    def write(self, frame: Frame) -> None:
        if self.paused:
            return
        k = self.meta.num_points
        names = self.meta.expressions
        rows = [{"frame": frame.index, "timestamp": round(frame.timestamp_s, 6), "face_id": f.track_id,
                 "confidence": float(np.mean(f.confidence)), "success": 1, "pose": _pose_cols(f),
                 "landmarks": _with_pupils(f.landmarks_px, f.pupils_px, k),
                 "smoothed": _with_pupils(f.smoothed_px if f.smoothed_px is not None else f.landmarks_px, f.pupils_px, k),
                 "expressions": np.array([f.expressions.get(n, np.nan) for n in names], np.float32)}
                for f in frame.faces]
        if not rows:
            rows = [{"frame": frame.index, "timestamp": round(frame.timestamp_s, 6), "face_id": -1, "confidence": 0.0,
                     "success": 0, "pose": [float("nan")] * 6, "landmarks": None, "smoothed": None,
                     "expressions": np.full(len(names), np.nan, np.float32)}]
        try:
            self.q.put_nowait(rows)
        except queue.Full:
            self.lost_rows += len(rows)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                rows = self.q.get(timeout=0.2)
            except queue.Empty:
                rows = []
            if rows is None:
                break
            for r in rows:
                self._write_row(r)
            if time.monotonic() - last_flush > self.flush_every_s:
                self._flush()
                last_flush = time.monotonic()
        self._flush()

    def _write_row(self, r: dict) -> None:
        self.rows += 1
        k = self.meta.num_points
        lm = r["landmarks"] if r["landmarks"] is not None else np.full((k, 2), np.nan, np.float32)
        sm = r["smoothed"] if r["smoothed"] is not None else lm
        if self.fmt == "csv":
            self._csv.writerow([r["frame"], r["timestamp"], r["face_id"], f"{r['confidence']:.4f}", r["success"],
                                *[f"{v:.5f}" for v in r["pose"]], *[f"{v:.3f}" for v in lm[:, 0]],
                                *[f"{v:.3f}" for v in lm[:, 1]], *[f"{v:.3f}" for v in sm[:, 0]],
                                *[f"{v:.3f}" for v in sm[:, 1]], *[f"{v:.4f}" for v in r["expressions"]]])
        elif self.fmt == "jsonl":
            shapes = {"expressions": dict(zip(self.meta.expressions, np.round(r["expressions"], 4).tolist()))} \
                if self.meta.expressions else {}
            self._file.write(json.dumps({**{k2: r[k2] for k2 in ("frame", "timestamp", "face_id", "confidence", "success", "pose")},
                                         "landmarks": np.round(lm, 3).tolist(), "smoothed": np.round(sm, 3).tolist(),
                                         **shapes}) + "\n")
        else:
            self._npz.append({**r, "landmarks": lm, "smoothed": sm})

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        elif self._npz:
            tmp = self.path.with_name(self.path.name + ".tmp.npz")
            np.savez_compressed(tmp, **_stack_rows(self._npz, self.meta.num_points, len(self.meta.expressions)),
                                meta=json.dumps(self.meta.__dict__, default=str))
            tmp.replace(self.path)

    def close(self) -> None:
        self.q.put(None)
        self._thread.join(timeout=30)
        if self._file is not None:
            self._file.close()


def _stack_rows(rows: list[dict], k: int, n_shapes: int = 0) -> dict[str, np.ndarray]:
    """Rows -> arrays frames x faces x points x 2, and frames x faces x shapes when the recording keeps
    expressions (faces padded with NaN, ids -1)."""
    frames = sorted({r["frame"] for r in rows})
    fpos = {f: i for i, f in enumerate(frames)}
    per_frame: dict[int, list[dict]] = {}
    for r in rows:
        if r["success"]:
            per_frame.setdefault(r["frame"], []).append(r)
    n_faces = max([len(v) for v in per_frame.values()] + [1])
    lm = np.full((len(frames), n_faces, k, 2), np.nan, np.float32)
    sm = lm.copy()
    ids = np.full((len(frames), n_faces), -1, np.int32)
    shapes = np.full((len(frames), n_faces, n_shapes), np.nan, np.float32)
    ts = np.zeros(len(frames))
    for r in rows:
        ts[fpos[r["frame"]]] = r["timestamp"]
    for f, rs in per_frame.items():
        for j, r in enumerate(rs):
            lm[fpos[f], j], sm[fpos[f], j], ids[fpos[f], j] = r["landmarks"], r["smoothed"], r["face_id"]
            if n_shapes:
                shapes[fpos[f], j] = r["expressions"]
    out = {"frame": np.array(frames), "timestamp": ts, "face_id": ids, "landmarks": lm, "smoothed": sm}
    return out | ({"expressions": shapes} if n_shapes else {})


def load_recording(path: str | Path) -> dict[str, np.ndarray]:
    """Any recording -> {"frame", "timestamp", "face_id", "landmarks", "smoothed"} arrays (frames x faces x K x 2),
    and "expressions" (frames x faces x shapes, named by "expression_names") when it keeps them. A last
    row cut short (the writer was killed mid-row) is left out; anything else malformed is a RecordError."""
    import zipfile
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                out = {k: z[k] for k in ("frame", "timestamp", "face_id", "landmarks", "smoothed", "expressions") if k in z}
                names = json.loads(str(z["meta"])).get("expressions", [])
        else:
            meta = json.loads(Path(str(path) + ".meta.json").read_text())
            k, names = int(meta["num_points"]), meta.get("expressions", [])
            if path.suffix == ".csv":
                with open(path, newline="") as f:
                    rows = _parse_rows(list(csv.DictReader(f)), lambda r: _csv_row(r, k, names))
            else:
                rows = _parse_rows([ln for ln in path.read_text().splitlines() if ln.strip()], lambda ln: _json_row(ln, names))
            out = _stack_rows(rows, k, len(names))
        return out | ({"expression_names": np.array(names)} if names else {})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise RecordError(f"cannot load recording {path} ({e.__class__.__name__}: {str(e)[:80]}); pass a .csv, .jsonl "
                          "or .npz written by `track --record` or `extract`, with its .meta.json") from None


def _parse_rows(items: list, parse) -> list[dict]:
    rows = []
    for i, item in enumerate(items):
        try:
            rows.append(parse(item))
        except (ValueError, KeyError, TypeError):
            if i < len(items) - 1:
                raise
    return rows


def _csv_row(r: dict, k: int, names: list[str]) -> dict:
    raw, smooth = (np.array([[float(r[f"{p}x_{i}"]), float(r[f"{p}y_{i}"])] for i in range(k)], np.float32) for p in ("", "s"))
    return {"frame": int(r["frame"]), "timestamp": float(r["timestamp"]), "face_id": int(r["face_id"]),
            "success": int(r["success"]), "landmarks": raw, "smoothed": smooth,
            "expressions": np.array([float(r[n]) for n in names], np.float32)}


def _json_row(line: str, names: list[str]) -> dict:
    r = json.loads(line)
    shapes = r.get("expressions", {})
    return {**r, "landmarks": np.array(r["landmarks"], np.float32), "smoothed": np.array(r["smoothed"], np.float32),
            "expressions": np.array([shapes.get(n, np.nan) for n in names], np.float32)}


def recorded_frames(rec: dict, video=None, notify=None):
    """A loaded recording as Frames (for drawing), over the frames of its video (`video`: an iterator of
    (image, timestamp) from the source it was made from) or a blank canvas. The recording's frame
    numbers index the video; a video that ends early leaves the rest on the canvas (said once)."""
    from models.detector import FaceBox
    from stream.frames import Face
    lm = rec["landmarks"]
    w = int(np.nanmax(lm[..., 0])) + 40 if np.isfinite(lm).any() else 640
    h = int(np.nanmax(lm[..., 1])) + 40 if np.isfinite(lm).any() else 480
    blank = np.full((h, w, 3), 40, np.uint8)
    video_pos, image = -1, blank
    for i, idx in enumerate(rec["frame"]):
        while video is not None and video_pos < idx:
            got = next(video, None)
            video_pos += 1
            if got is None:
                if notify:
                    notify(f"the video ends before frame {idx} of the recording: the rest is drawn on a blank canvas")
                video, image = None, blank
            else:
                image = got[0]
        faces = [Face(int(tid), FaceBox.from_landmarks(lm[i, j]), lm[i, j], np.ones(len(lm[i, j]), np.float32), "replay",
                      smoothed_px=rec["smoothed"][i, j])
                 for j, tid in enumerate(rec["face_id"][i]) if tid >= 0 and np.isfinite(lm[i, j]).all()]
        yield Frame(int(idx), float(rec["timestamp"][i]), image, faces=faces)
