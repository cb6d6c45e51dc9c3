"""Weight I/O: safe checkpoints, the official HIH checkpoint format, ONNX export.

torch is imported by the functions that use it, so the file checks and hashes serve the
onnxruntime path without it."""
from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from models.schema import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn


def save_checkpoint(ckpt: dict, path: Path) -> None:
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(_to_cpu(ckpt), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint


def _to_cpu(obj):
    """Checkpoints always hold CPU tensors, so a GPU-trained file loads anywhere."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def check_weights_file(path: str | Path) -> Path:
    """The path, if it can be a checkpoint: an existing zip archive (what torch.save writes)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights {path} is a folder; pass the .pt file in it (e.g. {path}/best.pt)")
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; pass --weights PATH or train one with `hihtrack train`")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damaged or foreign
        raise WeightsError(f"cannot read weights {path}: the file is truncated or not a torch checkpoint")
    return path


def load_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True: a pickle that carries code is refused, not run."""
    import torch
    path = check_weights_file(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"refused to load {path}: it is not a plain weights file "
                           f"(weights_only=True rejected it: {str(e).splitlines()[0][:120]})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise WeightsError(f"cannot read weights {path}: the file is truncated or not a torch checkpoint "
                           f"({e.__class__.__name__})") from None
    if not isinstance(ck, dict):
        raise WeightsError(f"{path} holds a {type(ck).__name__}, not a checkpoint dict")
    return ck


def average_checkpoints(paths: list[str | Path]) -> dict:
    """The mean of several checkpoints of one network (e.g. a run's last epochs, `optim.keep_epochs`):
    every floating-point tensor of their state_dicts averaged, batch-norm statistics included; integer
    tensors (batch counts), the recipe and the rest from the last; no optimizer state. A mean of nearby
    epochs averages out their epoch-to-epoch noise (the shipped `fast` is one: MODEL_CARD.md)."""
    import torch
    if len(paths) < 2:
        raise WeightsError("averaging needs at least two checkpoints (e.g. runs/NAME/epoch_*.pt)")
    cks = [load_checkpoint(p) for p in paths]
    for path, ck in zip(paths, cks):
        if not isinstance(ck.get("state_dict"), dict):
            raise WeightsError(f"{path} has no state_dict; average checkpoints written by `hihtrack train`")
    last = cks[-1]["state_dict"]
    for path, ck in zip(paths, cks):
        if difference := layout_difference(last, ck["state_dict"]):
            raise WeightsError(f"{path} is not a checkpoint of the same network as {paths[-1]} ({difference}); "
                               "average the epochs of one run")
    mean = {k: torch.stack([ck["state_dict"][k].float() for ck in cks]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in last.items()}
    kept = {k: v for k, v in cks[-1].items() if k not in ("state_dict", "optimizer")}
    return {**kept, "state_dict": mean, "averaged_from": [Path(p).name for p in paths]}


def official_state_dict(ck: dict) -> dict[str, torch.Tensor]:
    """The official HIH format: {'state_dict', 'best_nme', 'optimizer', 'epoch'} (spec §2.5);
    also accepts a bare state_dict and strips a DataParallel 'module.' prefix."""
    import torch
    sd = ck.get("state_dict", ck)
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def layout_difference(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """What first differs between two state_dicts' keys and shapes, for an error line ("" = none)."""
    for k, v in given.items():
        if k in expected and expected[k].shape != v.shape:
            return f"{k} has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        return f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
    return ""


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    if difference := layout_difference(model.state_dict(), state_dict):
        raise WeightsError(f"{source} does not match this architecture: {difference}; check --config / the recipe")
    model.load_state_dict(state_dict)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_onnx(graph: nn.Module, path: Path, example: torch.Tensor, outputs: list[str], facts: dict) -> None:
    """`graph` (batch first, one input named "crops") as ONNX opset 17 at `path`, with `facts` (what
    a caller needs to use it without torch: sizes, point count...) in its metadata."""
    import onnx
    import torch
    torch.onnx.export(graph.eval(), (example,), str(path), input_names=["crops"], output_names=outputs,
                      dynamic_axes={"crops": {0: "batch"}}, opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"hihtrack": json.dumps(facts)})
    onnx.save(model, str(path))
