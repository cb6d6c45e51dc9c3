"""The HIH network on torch: CPU, or CUDA with a ring of streams.

`DeployGraph` is the whole inference graph, uint8 crops in and points out, so the torch path and
the ONNX graph exported from it (models/onnx_cache.py) are one implementation.
On CUDA, `TorchRunner` keeps a ring of `streams` slots, each with a pinned host buffer, a copy stream
and a compute stream ordered by events: upload (non_blocking) -> compute + on-device decode -> async
download. `submit` (host crops) and `submit_frames` (whole frames, cropped on the device) return at
once, so the next batch's preparation and upload overlap this batch's compute; `collect` waits for
one slot. The engine's landmark stage (tracking, extract, the web page) goes through them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import crop
from models.codec import build_codec
from models.data import IMAGENET_MEAN, IMAGENET_STD
from models.network import build_network
from models.schema import SettingsError, WeightsError
from models.train import Recipe
from models.weights import export_onnx, load_checkpoint, load_into

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


EDGE_POINTS = 8      # points per face read again at a decimal window's edge (HIHCodec.edge_reread)


class DeployGraph(nn.Module):
    """(B,S,S,3) uint8 BGR crops -> (B,K,3): x, y in crop px and confidence."""

    def __init__(self, net: nn.Module, codec):
        super().__init__()
        self.net, self.codec = net, codec
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, crops_u8: torch.Tensor) -> torch.Tensor:
        x = crops_u8.permute(0, 3, 1, 2).flip(1).float()          # NHWC BGR -> NCHW RGB
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if getattr(self.codec, "edge_reread", 0) > 0 and self.net.cfg.decimal_head == "roi":
            out = self._read_again_at_edges(out)
        pts, conf = self.codec.decode(out)
        return torch.cat([pts, conf[..., None]], -1).float()

    def _read_again_at_edges(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The EDGE_POINTS points of each face nearest their decimal window's edge are read again at the
        neighbouring cell where they lie within HIHCodec.edge_reread of it: a fixed-size second read
        (no branch in the graph), a fraction of the first's cost."""
        dec, cells = out["decimal"], out["peak_cells"]
        frac = self.codec.decimal_fraction(dec)
        points = self.codec.edge_margin(frac).topk(min(EDGE_POINTS, dec.shape[1]), dim=1, largest=False).indices   # (B,M)
        at = points[..., None].expand(-1, -1, 2)                        # (B,M,2): those points' x and y
        near_cells, near_frac = cells.gather(1, at), frac.gather(1, at)
        step = self.codec.edge_step(near_frac)
        hm_px = out["heatmaps"].shape[-1]
        moved_to = (near_cells + step).clamp(0, hm_px - 1)
        moved = (moved_to != near_cells).any(-1)
        again = self.codec.decimal_fraction(self.net.decimal_at(out, moved_to, points))
        new_frac = torch.where(moved[..., None], again, near_frac)
        new_cells = torch.where(moved[..., None], moved_to, near_cells)
        # the decode takes these fractions as they are (it need not compute them again)
        return {**out, "fraction": frac.scatter(1, at, new_frac), "peak_cells": cells.scatter(1, at, new_cells)}


def load_graph(weights: Path, decode: str | None = None) -> tuple[DeployGraph, Recipe]:
    """A hihtrack checkpoint -> its inference graph (eval mode, CPU) and its recipe."""
    ck = load_checkpoint(weights)
    if "recipe" not in ck:
        raise WeightsError(f"{weights} has no recipe: it is not a hihtrack checkpoint (for the official "
                           "HIH format use models.weights.official_state_dict with configs/hih_paper.yaml)")
    try:
        recipe = Recipe.from_dict(ck["recipe"])
    except SettingsError as e:
        raise WeightsError(f"{weights} carries a recipe this version cannot read ({e}); retrain or re-export it") from None
    net = build_network(recipe.model)
    load_into(net, ck["state_dict"], str(weights))
    decode = decode or ck.get("decode", "hih")
    codec = recipe.hih_codec()
    if decode != "hih":
        codec = build_codec(decode, input_px=codec.input_px, heatmap_px=codec.heatmap_px)
    return DeployGraph(net.to(memory_format=torch.channels_last), codec).eval(), recipe


def facts(recipe: Recipe, graph: DeployGraph) -> dict:
    """What the crop geometry needs to know about a network (stored with its ONNX graph)."""
    return {"input_px": recipe.model.input_px, "crop_scale": recipe.augment.crop_scale,
            "num_points": recipe.model.num_landmarks, "stride": graph.codec.stride}


def export_graph(weights: Path, path: Path, decode: str | None = None) -> None:
    """The inference graph of `weights` as ONNX: uint8 crops in, (B,K,3) points out."""
    graph, recipe = load_graph(weights, decode)
    s = recipe.model.input_px
    with torch.inference_mode(False), torch.no_grad():
        export_onnx(graph, path, torch.zeros(1, s, s, 3, dtype=torch.uint8), ["points"], facts(recipe, graph))


@dataclass
class _Slot:
    host_in: torch.Tensor
    host_out: torch.Tensor
    copy: "torch.cuda.Stream"
    compute: "torch.cuda.Stream"
    uploaded: "torch.cuda.Event"
    done: "torch.cuda.Event"
    n: int = 0


class TorchRunner:
    """Runs the graph on `device` in `precision`; on CUDA through the stream ring."""

    def __init__(self, weights: Path, device: str, precision: str = "fp32", streams: int = 2, threads: int = 0,
                 decode: str | None = None, max_batch: int = 16):
        self.graph, self.recipe = load_graph(weights, decode)
        self.facts = facts(self.recipe, self.graph)
        self.device = torch.device(device)
        if threads:
            torch.set_num_threads(threads)
        self.dtype = PRECISIONS[precision]
        self.graph = self.graph.to(self.device)
        self.max_batch = max_batch
        self._slots = [self._make_slot(max_batch) for _ in range(max(1, streams))] if self.device.type == "cuda" else []
        self._next = 0

    @torch.inference_mode()
    def forward(self, crops_u8: torch.Tensor) -> torch.Tensor:
        """(B,S,S,3) uint8 on self.device -> (B,K,3) on self.device."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.graph(crops_u8)

    def __call__(self, crops_u8: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B,S,S,3) uint8 crops (host array, or a tensor on the device) -> (B,K,3) host array."""
        if isinstance(crops_u8, torch.Tensor):
            return self.forward(crops_u8).cpu().numpy()
        return self.collect(self.submit(crops_u8))

    def crops_on_device(self, image_bgr: np.ndarray, matrices: np.ndarray) -> torch.Tensor:
        """The crops made where the network runs: the frame is uploaded once and all its faces are
        sampled in one grid_sample -> (N,S,S,3) uint8 BGR on self.device."""
        frame = torch.from_numpy(np.ascontiguousarray(image_bgr)).to(self.device, non_blocking=True)
        return self._device_crops(frame, matrices)

    def _device_crops(self, frame: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
        m = torch.as_tensor(matrices, dtype=torch.float32, device=self.device)
        out = crop.warp_many(frame.permute(2, 0, 1).float(), m, self.facts["input_px"])
        return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def submit(self, crops_u8: np.ndarray):
        """Hand over a batch of host crops: on CUDA queued on the stream ring (returns at once), on the
        CPU run now. `collect` gives the (B,K,3) host array."""
        if self._slots:
            return self._submit_slot(len(crops_u8), lambda slot: self._upload(slot, crops_u8))
        return self.forward(torch.from_numpy(np.ascontiguousarray(crops_u8))).numpy()

    def submit_frames(self, items: list[tuple[np.ndarray, np.ndarray]]):
        """Hand over whole frames with their crop matrices [(image, (N,2,3))]: the crops are cut on the
        device. On CUDA the frames go up on the slot's copy stream and the crops, the network and the
        download run on its compute stream; on the CPU it runs now."""
        n = sum(len(m) for _, m in items)
        if not self._slots:
            return self.forward(torch.cat([self.crops_on_device(img, m) for img, m in items])).numpy()

        def upload(slot: _Slot):
            frames = [torch.from_numpy(np.ascontiguousarray(img)).pin_memory().to(self.device, non_blocking=True)
                      for img, _ in items]

            def crops() -> torch.Tensor:              # on the compute stream, which reads the uploaded frames
                for f in frames:
                    f.record_stream(torch.cuda.current_stream(self.device))
                return torch.cat([self._device_crops(f, m) for f, (_, m) in zip(frames, items)])
            return crops
        return self._submit_slot(n, upload)

    def collect(self, handle) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return handle
        handle.done.synchronize()
        return handle.host_out[:handle.n].numpy().copy()

    # ---- CUDA streams -----------------------------------------------------------------------
    def _make_slot(self, rows: int) -> _Slot:
        s, k = self.facts["input_px"], self.facts["num_points"]
        return _Slot(torch.empty((rows, s, s, 3), dtype=torch.uint8).pin_memory(),
                     torch.empty((rows, k, 3), dtype=torch.float32).pin_memory(),
                     torch.cuda.Stream(self.device), torch.cuda.Stream(self.device),
                     torch.cuda.Event(), torch.cuda.Event())

    def _upload(self, slot: _Slot, crops_u8: np.ndarray):
        """On the slot's copy stream: host crops -> pinned buffer -> device; returns what computes on them."""
        n = len(crops_u8)
        slot.host_in[:n].numpy()[...] = crops_u8
        dev_in = slot.host_in[:n].to(self.device, non_blocking=True)
        return lambda: dev_in

    @torch.inference_mode()
    def _submit_slot(self, n: int, upload) -> _Slot:
        """The next slot of the ring: `upload(slot)` queued on its copy stream (returning the function
        that gives the device crops), then crops, network and download on its compute stream, ordered
        by events. Returns without waiting."""
        i = self._next
        self._next = (i + 1) % len(self._slots)
        self._slots[i].done.synchronize()          # the slot's previous result has been read
        if n > len(self._slots[i].host_in):         # a larger batch than the slot was made for
            self._slots[i] = self._make_slot(n)
        slot = self._slots[i]
        with torch.cuda.stream(slot.copy):
            device_crops = upload(slot)
            slot.uploaded.record(slot.copy)
        with torch.cuda.stream(slot.compute):
            slot.compute.wait_event(slot.uploaded)
            crops = device_crops()
            crops.record_stream(slot.compute)
            slot.host_out[:n].copy_(self.forward(crops), non_blocking=True)
            slot.done.record(slot.compute)
        slot.n = n
        return slot
