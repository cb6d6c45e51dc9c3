"""The HIH inference engine: batched face crops -> sub-pixel landmarks, on CPU or CUDA.

CPU: inference_mode, channels-last, thread count from config; or the same graph on onnxruntime
(`backend="onnxruntime"`), which measured faster here, above all while other threads load the CPU.
CUDA: a ring of `streams` slots, each with a pinned host buffer, a copy stream and a compute
stream ordered by events: upload (non_blocking) -> compute + on-device decode -> async download.
`submit` returns at once, so the next batch's crop preparation and upload overlap this batch's
compute; `collect` waits for one slot. `run` is submit + collect for callers that want a result now.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import crop
from models.codec import build_codec
from models.network import build_network
from models.schema import SettingsError
from models.schemes import scheme_for
from models.train import Recipe
from models.weights import WeightsError, load_checkpoint, load_into

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# the shipped weights by name (--weights small|fast|PATH); see models/weights/MODEL_CARD.md
SHIPPED_WEIGHTS = {"small": _WEIGHTS_DIR / "hih_small_300w.pt", "fast": _WEIGHTS_DIR / "hih_fast_300w.pt"}
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS["small"]


def weights_path(spec: str | Path | None) -> Path:
    """A shipped name, a file path, or None (the default weights) -> the file."""
    return DEFAULT_WEIGHTS if spec is None else SHIPPED_WEIGHTS.get(str(spec), Path(spec))


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WeightsError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


@dataclass
class _Slot:
    host_in: torch.Tensor
    host_out: torch.Tensor
    copy: "torch.cuda.Stream"
    compute: "torch.cuda.Stream"
    uploaded: "torch.cuda.Event"
    done: "torch.cuda.Event"
    n: int = 0


# The crops averaged per face, as (dx, dy) offsets in heatmap cells and a mirror flag: staggered by half
# a cell, so one view's cell quantisation falls mid-cell in the other, and mirrored, so the network's
# left-right biases cancel (the mirrored view's points are relabelled left <-> right).
VIEWS = {1: [(0.0, 0.0, False)],
         2: [(-0.25, -0.25, False), (0.25, 0.25, True)],
         4: [(-0.25, -0.25, False), (0.25, 0.25, False), (-0.25, 0.25, True), (0.25, -0.25, True)]}


class LandmarkEngine:
    def __init__(self, weights: str | Path | None = None, device: str = "auto", precision: str = "fp32",
                 streams: int = 2, threads: int = 0, decode: str | None = None, max_batch: int = 16,
                 channels_last: bool = True, backend: str = "torch", views: int = 1):
        weights = weights_path(weights)
        ck = load_checkpoint(weights)
        if "recipe" not in ck:
            raise WeightsError(f"{weights} has no recipe: it is not a hihtrack checkpoint (for the official "
                               "HIH format use models.weights.official_state_dict with configs/hih_paper.yaml)")
        try:
            self.recipe = Recipe.from_dict(ck["recipe"])
        except SettingsError as e:
            raise WeightsError(f"{weights} carries a recipe this version cannot read ({e}); retrain or re-export it") from None
        self.weights_path = Path(weights)
        self.net = build_network(self.recipe.model)
        load_into(self.net, ck["state_dict"], str(weights))
        self.device = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.dtype = PRECISIONS[precision]
        self.net = self.net.eval().to(self.device)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        decode = decode or ck.get("decode", "hih")
        codec = self.recipe.hih_codec()
        self.codec = codec if decode == "hih" else build_codec(decode, input_px=codec.input_px, heatmap_px=codec.heatmap_px)
        self.input_px = self.recipe.model.input_px
        self.crop_scale = self.recipe.augment.crop_scale
        self.num_points = self.recipe.model.num_landmarks
        self.max_batch = max_batch
        if views == 0:   # auto: a second view is free on a GPU (bench speed: batch 2 costs what batch 1 does), 1.7x on a CPU
            views = 2 if self.device.type == "cuda" else 1
        if views not in VIEWS:
            raise ValueError(f"views must be one of {sorted(VIEWS)}, not {views}")
        self.views = VIEWS[views]
        self._mirrored = np.array([flip for *_, flip in self.views])
        self._flip_perm = np.asarray(scheme_for(self.num_points).flip)
        self._mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1) * 255
        self._slots: list[_Slot] = []
        self._next = 0
        if self.device.type == "cuda":
            self._slots = [self._make_slot() for _ in range(max(1, streams))]
        self._ort = self._onnx_session(threads) if backend == "onnxruntime" and self.device.type == "cpu" else None

    def _onnx_session(self, threads: int):
        """The same graph on onnxruntime (CPU): exported once per weights file into a temp folder."""
        import os
        import tempfile

        import onnxruntime as ort

        from models.weights import export_onnx, file_sha256
        path = Path(tempfile.gettempdir()) / f"hihtrack-{file_sha256(self.weights_path)[:16]}.onnx"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.{id(self)}.tmp")
            export_onnx(self.net, tmp, self.input_px)
            tmp.replace(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    # ---- crops ------------------------------------------------------------------------------
    def crop_matrices(self, centers_px: np.ndarray, sides_px: np.ndarray) -> np.ndarray:
        """(N,2), (N,) landmark-extent squares -> (N,2,3) image->crop matrices."""
        return np.stack([crop.similarity(c, s * self.crop_scale, self.input_px) for c, s in zip(centers_px, sides_px)])

    def crops(self, image_bgr: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """One cv2.warpAffine per face -> (N,S,S,3) uint8 BGR."""
        return np.stack([crop.warp(image_bgr, m, self.input_px) for m in matrices])

    def crops_on_device(self, image_bgr: np.ndarray, matrices: np.ndarray) -> torch.Tensor:
        """The same crops made where the network runs: the frame is uploaded once and all its faces
        are sampled in one grid_sample -> (N,S,S,3) uint8 BGR on self.device."""
        frame = torch.from_numpy(np.ascontiguousarray(image_bgr)).to(self.device, non_blocking=True)
        m = torch.as_tensor(matrices, dtype=torch.float32, device=self.device)
        out = crop.warp_many(frame.permute(2, 0, 1).float(), m, self.input_px)
        return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def _view_matrices(self, matrices: np.ndarray) -> np.ndarray:
        """(N,2,3) -> (N*V,2,3): each face's crop matrix per view (offset in crop px, mirrored about the crop centre)."""
        vm = np.repeat(matrices, len(self.views), axis=0)
        for k, (dx, dy, flip) in enumerate(self.views):
            sel = vm[k::len(self.views)]
            if flip:
                sel[:, 0] = -sel[:, 0]
                sel[:, 0, 2] += self.input_px - 1
            sel[:, :, 2] += np.array([dx, dy]) * self.codec.stride
        return vm

    # ---- network ----------------------------------------------------------------------------
    def _preprocess(self, crops_u8: torch.Tensor) -> torch.Tensor:
        x = crops_u8.permute(0, 3, 1, 2).flip(1).float()          # NHWC BGR -> NCHW RGB
        return ((x - self._mean) / self._std).contiguous(memory_format=self.memory_format)

    def _forward_decode(self, crops_u8: torch.Tensor) -> torch.Tensor:
        """On-device: (B,S,S,3) uint8 -> (B,K,3) = x, y in crop px and confidence."""
        x = self._preprocess(crops_u8)
        if self._ort is not None:
            heatmap, decimal = self._ort.run(None, {"image": x.contiguous().numpy()})
            out = {"heatmaps": torch.from_numpy(heatmap), "decimal": torch.from_numpy(decimal)}
        else:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                out = self.net(x)
        pts, conf = self.codec.decode(out)
        return torch.cat([pts, conf[..., None]], -1).float()

    @torch.inference_mode()
    def infer(self, crops_u8: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N,S,S,3) uint8 BGR crops (host array, or a tensor already on the device) -> landmarks in
        crop px (N,K,2), confidence (N,K); run in chunks of max_batch."""
        outs = []
        for start in range(0, len(crops_u8), self.max_batch):
            chunk = crops_u8[start:start + self.max_batch]
            if isinstance(chunk, torch.Tensor):
                outs.append(self._forward_decode(chunk).cpu().numpy())
            elif self._slots:
                outs.append(self.collect(self.submit(chunk)))
            else:
                outs.append(self._forward_decode(torch.from_numpy(np.ascontiguousarray(chunk))).numpy())
        res = np.concatenate(outs) if outs else np.zeros((0, self.num_points, 3), np.float32)
        return res[..., :2], res[..., 2]

    def landmarks(self, image_bgr: np.ndarray, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole landmark stage: crop -> infer -> decode -> back to image px (N,K,2), (N,K).

        With several views (VIEWS) each face is cropped at staggered sub-cell offsets and mirrored,
        in one batch, and the views' landmarks are averaged in image px (crop-position spread and
        NME both drop: README, Steadiness).
        """
        return self.landmarks_many([(image_bgr, matrices)])[0]

    def landmarks_many(self, items: list[tuple[np.ndarray, np.ndarray]],
                       device_crops: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The landmark stage for the faces of several frames (e.g. of different videos) as one network
        batch: [(image, (N,2,3) matrices)] -> [((N,K,2) image px, (N,K) confidence)]. Crops are made
        on the device when it is a GPU (device_crops=None), with OpenCV on the host otherwise."""
        device_crops = self.device.type == "cuda" if device_crops is None else device_crops
        views = [self._view_matrices(np.asarray(m, np.float64).reshape(-1, 2, 3)) for _, m in items]
        parts = [(self.crops_on_device if device_crops else self.crops)(img, vm) for (img, _), vm in zip(items, views) if len(vm)]
        if not parts:
            pts, conf = np.zeros((0, self.num_points, 2), np.float32), np.zeros((0, self.num_points), np.float32)
        else:
            pts, conf = self.infer(torch.cat(parts) if device_crops else np.concatenate(parts))
        v, out, start, mirrored = len(self.views), [], 0, self._mirrored
        for vm in views:
            n, stop = len(vm) // v, start + len(vm)
            p, c = pts[start:stop].reshape(n, v, self.num_points, 2), conf[start:stop].reshape(n, v, self.num_points)
            p[:, mirrored], c[:, mirrored] = p[:, mirrored][:, :, self._flip_perm], c[:, mirrored][:, :, self._flip_perm]
            inv = np.stack([crop.invert(m) for m in vm]).reshape(n, v, 2, 3) if n else np.zeros((0, v, 2, 3))
            image_pts = crop.transform_points(inv, p.astype(np.float64))
            out.append((image_pts.mean(1).astype(np.float32), c.mean(1)))
            start = stop
        return out

    # ---- CUDA streams -----------------------------------------------------------------------
    def _make_slot(self) -> _Slot:
        s, k = self.input_px, self.num_points
        return _Slot(torch.empty((self.max_batch, s, s, 3), dtype=torch.uint8).pin_memory(),
                     torch.empty((self.max_batch, k, 3), dtype=torch.float32).pin_memory(),
                     torch.cuda.Stream(self.device), torch.cuda.Stream(self.device),
                     torch.cuda.Event(), torch.cuda.Event())

    @torch.inference_mode()
    def submit(self, crops_u8: np.ndarray) -> _Slot:
        """Queue one batch (<= max_batch) on the next slot and return without waiting."""
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        slot.done.synchronize()                    # the slot's previous result has been read
        n = len(crops_u8)
        slot.host_in[:n].numpy()[...] = crops_u8
        with torch.cuda.stream(slot.copy):
            dev_in = slot.host_in[:n].to(self.device, non_blocking=True)
            slot.uploaded.record(slot.copy)
        with torch.cuda.stream(slot.compute):
            slot.compute.wait_event(slot.uploaded)
            dev_in.record_stream(slot.compute)
            res = self._forward_decode(dev_in)
            slot.host_out[:n].copy_(res, non_blocking=True)
            slot.done.record(slot.compute)
        slot.n = n
        return slot

    @staticmethod
    def collect(slot: _Slot) -> np.ndarray:
        slot.done.synchronize()
        return slot.host_out[:slot.n].numpy().copy()
