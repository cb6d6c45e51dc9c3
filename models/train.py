"""Training: single process or torchrun + DistributedDataParallel (gloo on CPU, nccl on GPU).

    python run.py train --config configs/hih_small.yaml --data ../shared/data/300w
    torchrun --nproc_per_node 2 run.py train --config ... --data ...

A recipe (YAML) has sections model / codec / loss / augment / optim / data; see configs/.
The schedule is cosine with warm-up, driven by steps or, with `optim.budget_s`, by wall time so a
run always ends on budget. Checkpoints carry optimizer state (resume with --resume); the best
weights by validation NME are kept apart; a CSV log and a loss/NME plot are written.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from models import data as D
from models.codec import HIHCodec, build_codec
from models.eyelids import UPPER_LIDS
from models.losses import LossConfig, consistency_loss, hih_loss
from models.metrics import nme_per_face, summarize
from models.network import NetworkConfig, build_network, slim
from models.schema import SettingsError, from_mapping, setting
from models.schemes import scheme_for
from models.weights import load_checkpoint, load_into, save_checkpoint

DECODES = ("hih", "argmax", "quarter", "centroid", "dark", "softargmax")


@dataclass
class OptimConfig:
    lr: float = setting(1e-3, 1e-9, 10.0)
    weight_decay: float = setting(0.0, 0.0, 1.0)
    batch_size: int = setting(16, 1, 4096)
    epochs: int = setting(40, 1, 100_000)
    budget_s: float = setting(0.0, 0.0)         # > 0: the cosine schedule follows wall time and stops at it
    warmup_steps: int = setting(200, 0)
    eval_every_epochs: int = setting(2, 1)
    seed: int = 0
    roi_cell: Literal["predicted", "gt"] = "predicted"    # which integer cell the ROI decimal head learns to refine
    grad_clip: float = setting(0.0, 0.0)        # > 0: clip the gradient norm (fine-tuning with the consistency loss)
    real_val_tolerance: float = setting(0.0, 0.0)  # > 0 with a synthetic mix: the best checkpoint is the lowest
                                   # validation NME among those whose real-face validation NME is at most this
                                   # above the starting weights' (the near-frontal guardrail, NME %)
    train_only: str = ""           # a top-level module of the network (e.g. roi_head): only its weights learn, the
                                   # rest stays as --init left it, batch-norm statistics included ("" = all learn)
    keep_epochs: bool = False      # also keep each evaluated epoch's weights (epoch_NNN.pt), so a checkpoint can be
                                   # chosen afterwards on checks the validation NME does not see (the sliding crop)


@dataclass
class DataConfig:
    cache_side_px: int = setting(256, 32, 2048)
    cache_box_scale: float = setting(1.8, 1.0, 4.0)
    val_faces: int = setting(100, 0)          # held out from the training split for best-model selection;
                                   # 0 = validate on the training faces themselves (overfit checks)
    workers: int = setting(2, 0, 64)
    synth: str = ""                # a `run.py synth-poses` cache mixed into training ("" = real faces only); the
                                   # views of held-out faces join the validation set, never the training set
    balance_power: float = setting(0.0, 0.0, 1.0)   # sample faces by 1 / (faces in their pose bin) ** power:
                                   # 0 = uniform, 1 = every yaw bin equally often
    synth_share: float = setting(0.0, 0.0, 1.0)     # > 0: this share of each epoch's samples is synthetic, the rest
                                   # real (0 = in proportion to their counts); near-frontal accuracy needs real faces


@dataclass
class Recipe:
    model: NetworkConfig = field(default_factory=NetworkConfig)
    codec: dict = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: D.AugmentConfig = field(default_factory=D.AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """Checked against the dataclasses: unknown keys, wrong types and bad ranges raise SettingsError."""
        return from_mapping(cls, d, "recipe")

    def to_dict(self) -> dict:
        return {k: (v if isinstance(v, dict) else asdict(v)) for k, v in self.__dict__.items()}

    def hih_codec(self) -> HIHCodec:
        return HIHCodec(input_px=self.model.input_px, heatmap_px=self.model.heatmap_px,
                        decimal_px=self.model.decimal_px, **self.codec)


def _ddp() -> tuple[int, int]:
    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def forward_and_loss(model, recipe: Recipe, codec: HIHCodec, x, pts, a_to_b: torch.Tensor | None = None,
                     teacher: Teacher | None = None, real: torch.Tensor | None = None,
                     taught: torch.Tensor | None = None, edited: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One training forward: the decimal target refers to the cell the decimal map refines.

    a_to_b: when given, x and pts hold two views (first half a, second half b) of the same faces and
    (B,2,3) maps view-a input px to view-b input px; the consistency term compares their decodes.
    teacher: when given, its targets (Teacher.targets, in the student's geometry) are a second target
    (loss.distill_weight), on the faces where real (B,) is True when
    loss.distill_on is "real" (taught (B,), when given, narrows them: real faces the teacher knows).
    edited (B,): the rows given closed eyes (their lids weigh loss.closed_lid_weight).
    """
    use_gt_cell = recipe.model.decimal_head == "global" or recipe.optim.roi_cell == "gt"
    if use_gt_cell:
        gt_cells = ((pts + 0.5) / codec.stride).floor().clamp(0, codec.heatmap_px - 1).long()
        out = model(x, gt_cells)
    else:
        out = model(x)
    targets = codec.encode(pts, cells=out["peak_cells"])
    parts = hih_loss(out, targets, recipe.loss, point_weights(recipe.loss, pts.shape[1], real, edited))
    if a_to_b is not None:
        decoded, _ = codec.decode(out)            # differentiable through the decimal expectation
        da, db = decoded.chunk(2)
        parts["consistency"] = consistency_loss(D.crop.transform_points(a_to_b.to(da.device), da), db, codec.stride)
        parts["loss"] = parts["loss"] + recipe.loss.consistency_weight * parts["consistency"]
    taught_rows = (real if taught is None else taught) if recipe.loss.distill_on == "real" and real is not None else None
    if teacher is not None and (taught_rows is None or taught_rows.any()):
        if taught_rows is not None:
            x = x[taught_rows]
            out = {k: out[k][taught_rows] for k in ("heatmaps", "decimal", "peak_cells")}
        taught = hih_loss(out, teacher.targets(x, out["peak_cells"], codec), recipe.loss)
        parts["distill"], parts["distill_heatmap"] = taught["loss"], taught["heatmap"]
        parts["loss"] = parts["loss"] + recipe.loss.distill_weight * parts["distill"]
    return parts


def point_weights(cfg: LossConfig, num_points: int, real: torch.Tensor | None,
                  edited: torch.Tensor | None = None) -> torch.Tensor | None:
    """(B,K) loss weights: the jaw of the synthetic rows (real (B,) False) at loss.synth_jaw_weight, the
    upper lids of the rows given closed eyes (edited (B,)) at loss.closed_lid_weight; None when every
    point counts alike."""
    rows = real if real is not None else edited
    if rows is None:
        return None
    weights = torch.ones(len(rows), num_points, device=rows.device)
    points = lambda idx: torch.isin(torch.arange(num_points, device=rows.device), torch.tensor(idx, device=rows.device))[None]  # noqa: E731
    jaw = list(scheme_for(num_points).jaw)
    if cfg.synth_jaw_weight != 1.0 and real is not None and jaw:
        weights[(~real)[:, None] & points(jaw)] = cfg.synth_jaw_weight
    if cfg.closed_lid_weight != 1.0 and edited is not None and num_points == 68:
        weights[edited[:, None] & points(list(UPPER_LIDS))] = cfg.closed_lid_weight
    return None if bool((weights == 1).all()) else weights


@dataclass
class Teacher:
    """Frozen trained networks whose outputs, averaged, are a second training target (loss.distill_*).
    Several members teach as an ensemble: their mean landmarks are nearer the truth than either's."""
    members: list[tuple[torch.nn.Module, HIHCodec]]   # (network, its own codec to decode its landmarks)
    target: Literal["heatmaps", "landmarks"]

    @torch.no_grad()
    def targets(self, x: torch.Tensor, cells: torch.Tensor, student: HIHCodec) -> dict[str, torch.Tensor]:
        """x (B,3,S,S): the student's input; cells (B,K,2): the student's peak cells -> {"heatmap"
        (B,K,H,H), "decimal" (B,K,D,D) probabilities} in the student's geometry."""
        if self.target == "heatmaps":
            outs = [net(x, cells) for net, _ in self.members]
            return {"heatmap": torch.stack([t["heatmaps"][:, -1].float() for t in outs]).mean(0),
                    "decimal": torch.stack([t["decimal"].float().flatten(2).softmax(-1).view_as(t["decimal"])
                                            for t in outs]).mean(0)}
        points = torch.stack([self._landmarks(net, codec, x, student.input_px) for net, codec in self.members]).mean(0)
        return student.encode(points, cells=cells)

    @staticmethod
    def _landmarks(net: torch.nn.Module, codec: HIHCodec, x: torch.Tensor, student_px: int) -> torch.Tensor:
        """(B,K,2): a member's landmarks on the student's crop x, in the student's px."""
        side_px = codec.input_px
        if x.shape[-1] != side_px:   # pixel centres: align_corners=False, the mapping of the points below
            x = torch.nn.functional.interpolate(x.float(), size=(side_px, side_px), mode="bilinear", align_corners=False)
        points, _ = codec.decode(net(x))
        return (points.float() + 0.5) * (student_px / side_px) - 0.5


def load_teacher(recipe: Recipe, device) -> Teacher | None:
    """The distillation teacher the recipe names (None without one): one checkpoint or several, comma
    separated, frozen, each checked to share the student's landmarks and, for heatmap targets, its
    heatmap geometry."""
    cfg = recipe.loss
    if cfg.distill_weight <= 0:
        return None
    if not cfg.teacher:
        raise SettingsError("loss.distill_weight > 0 needs loss.teacher: a hihtrack checkpoint, e.g. models/weights/hih_small_300w.pt")
    members = [_teacher_member(Path(p.strip()).expanduser(), recipe, device) for p in cfg.teacher.split(",")]
    return Teacher(members, cfg.distill_target)


def _teacher_member(path: Path, recipe: Recipe, device) -> tuple[torch.nn.Module, HIHCodec]:
    ck = load_checkpoint(path)
    theirs = Recipe.from_dict(ck["recipe"])
    t, mine = theirs.model, recipe.model
    if t.num_landmarks != mine.num_landmarks:
        raise SettingsError(f"teacher {path} has {t.num_landmarks} landmarks, the student {mine.num_landmarks}; "
                            "name a teacher of the same landmark scheme")
    if recipe.loss.distill_target == "heatmaps" and (t.input_px, t.heatmap_px, t.decimal_px) != (
            mine.input_px, mine.heatmap_px, mine.decimal_px):
        raise SettingsError(f"teacher {path} has another heatmap geometry than the student (input, heatmap and decimal "
                            "px must match); set loss.distill_target=landmarks to learn from its landmarks instead")
    net = build_network(t)
    load_into(net, ck["state_dict"], str(path))
    return net.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last), theirs.hih_codec()


def training_batch(tr: D.FaceCache, idx: torch.Tensor, recipe: Recipe, gen: torch.Generator, dev) -> tuple:
    """(x, pts, a_to_b, edited): one augmented view per face, or two (stacked, so rows i and B+i are
    face i) when the consistency loss is on; edited (B,): the faces given an expression edit."""
    tr, idx, edited = D.edit_expressions(tr, idx, recipe.augment, gen)
    if recipe.loss.consistency_weight <= 0:
        x, pts, _ = D.make_batch(tr, idx, recipe.model.input_px, recipe.augment, gen, dev)
        return x, pts, None, edited
    (xa, pa, _), (xb, pb, _), a_to_b = D.make_view_pair(tr, idx, recipe.model.input_px, recipe.augment, gen, dev)
    return torch.cat([xa, xb]), torch.cat([pa, pb]), a_to_b, edited


@torch.inference_mode()
def predict(model, cache: D.FaceCache, recipe: Recipe, device, decodes=DECODES, batch: int = 64) -> dict[str, np.ndarray]:
    """Landmarks in cache px for every face and every decode: {decode: (N,K,2)}. Every module is left in
    the mode it was found in (a frozen part stays in eval mode: optim.train_only)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    codec = recipe.hih_codec()
    gen = torch.Generator().manual_seed(0)
    res = {d: [] for d in decodes}
    for start in range(0, len(cache), batch):
        idx = torch.arange(start, min(start + batch, len(cache)))
        x, _, m = D.make_batch(cache, idx, recipe.model.input_px, None, gen, device)
        out = model(x)
        inv = torch.linalg.inv(torch.cat([m, m.new_tensor([0, 0, 1]).expand(len(m), 1, 3)], 1))[:, :2]
        for d in decodes:
            c = codec if d == "hih" else build_codec(d, input_px=codec.input_px, heatmap_px=codec.heatmap_px)
            pts, _ = c.decode(out)
            res[d].append(D.crop.transform_points(inv, pts.cpu()).numpy())
    for m, training in modes:
        m.train(training)
    return {d: np.concatenate(v) for d, v in res.items()}


def face_errors(model, cache: D.FaceCache, recipe: Recipe, device, decodes=DECODES) -> dict[str, np.ndarray]:
    """Per-face NME (fraction of the ocular distance) for every decode: {decode: (N,)}."""
    preds = predict(model, cache, recipe, device, decodes)
    gt = cache.landmarks.numpy()
    ocular = scheme_for(gt.shape[1]).ocular
    return {d: nme_per_face(p, gt, ocular) for d, p in preds.items()}


def evaluate_cache(model, cache: D.FaceCache, recipe: Recipe, device, decodes=DECODES) -> dict[str, dict]:
    return {d: summarize(e) for d, e in face_errors(model, cache, recipe, device, decodes).items()}


def real_face_nme(model, val: D.FaceCache, n_real: int, recipe: Recipe, device) -> float:
    """HIH-decode NME % over the first n_real validation faces (the real ones of a synthetic mix)."""
    real = D.FaceCache(val.images[:n_real], val.landmarks[:n_real], [])
    return evaluate_cache(model, real, recipe, device, ("hih",))["hih"]["nme"]


def _mix_synthetic(tr: D.FaceCache, val: D.FaceCache, folder: Path, val_sources: torch.Tensor) -> tuple[D.FaceCache, D.FaceCache]:
    """Add a synthetic cache (models.profiling) to the real faces: the views made from a held-out face
    go to validation, so a selection never sees a face it was trained on."""
    syn = D.load_cache(folder)
    source = torch.as_tensor(json.loads((folder / "meta.json").read_text())["source_index"])
    held = torch.isin(source, val_sources)
    cat = lambda a, idx: D.FaceCache(torch.cat([a.images, syn.images[idx]]), torch.cat([a.landmarks, syn.landmarks[idx]]), [])  # noqa: E731
    return cat(tr, ~held), cat(val, held)


def yaw_proxy(landmarks: torch.Tensor) -> torch.Tensor:
    """(N,68,2) -> (N,) in [-0.5, 0.5]: where the nose tip sits between the jaw ends, along the eye axis
    (0 frontal, +-0.5 in profile). The jaw follows the visible silhouette in 300-W and in the
    synthetic faces alike, so one proxy serves both."""
    eye = landmarks[:, 45] - landmarks[:, 36]
    u = eye / eye.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    along = lambda p: (p * u).sum(-1)  # noqa: E731
    span = along(landmarks[:, 16] - landmarks[:, 0])
    return (along(landmarks[:, 30] - landmarks[:, 0]) / span.where(span.abs() > 1e-6, torch.ones_like(span))).clamp(0, 1) - 0.5


def sampling_weights(landmarks: torch.Tensor, n_real: int, cfg: DataConfig) -> torch.Tensor | None:
    """(N,) sampling weights for the training faces (real first, then synthetic), or None for plain
    shuffling: pose balance within each kind, then the synthetic share of the whole."""
    if cfg.balance_power <= 0 and cfg.synth_share <= 0:
        return None
    w = pose_balance_weights(landmarks, cfg.balance_power) if cfg.balance_power > 0 else torch.ones(len(landmarks))
    if cfg.synth_share > 0 and len(landmarks) > n_real:
        w[:n_real] *= (1 - cfg.synth_share) / w[:n_real].sum()
        w[n_real:] *= cfg.synth_share / w[n_real:].sum()
    return w


def pose_balance_weights(landmarks: torch.Tensor, power: float, bins: int = 10) -> torch.Tensor:
    """(N,) sampling weights: 1 / (faces in the same |yaw proxy| bin) ** power."""
    b = (yaw_proxy(landmarks).abs() * 2 * bins).long().clamp(0, bins - 1)
    count = torch.bincount(b, minlength=bins).float()
    return count[b] ** -power


def _init_state(init: Path, cfg: NetworkConfig) -> dict:
    """The weights a run starts from: the checkpoint's own, less the last stack's merge convs when this
    recipe's decimal head reads the skip sum instead (model.head_input), and, when this recipe narrows
    its residual bottlenecks, slimmed to them (models.network.slim)."""
    ck = load_checkpoint(init)
    src = Recipe.from_dict(ck["recipe"]).model if "recipe" in ck else cfg
    state = ck["state_dict"]
    if src.head_input == "merged" and cfg.head_input == "skip":
        skip = replace(src, head_input="skip")
        # the keys only the merged network has (its last merge convs), as the network itself decides them
        merge = build_network(src).state_dict().keys() - build_network(skip).state_dict().keys()
        state = {k: v for k, v in state.items() if k not in merge}
        src = skip
    if src.bottleneck <= cfg.bottleneck or replace(src, bottleneck=cfg.bottleneck) != cfg:
        return state
    wide = build_network(src)
    load_into(wide, state, str(init))
    return slim(wide, cfg).state_dict()


def trainable(model: torch.nn.Module, only: str) -> list[torch.nn.Parameter]:
    """The parameters that learn (optim.train_only), the rest frozen and its batch norms kept in eval
    mode, so their running statistics stay those of --init."""
    if not only:
        return list(model.parameters())
    children = dict(model.named_children())
    if only not in children:     # any other attribute (the config, a method) is no module to train
        raise SettingsError(f"optim.train_only: the network has no module {only!r}; it has " + ", ".join(children))
    for name, child in children.items():
        child.train(model.training and name == only)
        child.requires_grad_(name == only)
    return list(children[only].parameters())


def training_set(recipe: Recipe, data: str | Path | None, cache_dir: Path | None = None
                 ) -> tuple[D.FaceCache, D.FaceCache, int, torch.Tensor | None]:
    """The recipe's faces -> (train, validation, how many of train are real (they come first), sampling
    weights or None). recipe.data.val_faces real faces are held out, with their synthetic views."""
    spec = D.CacheSpec(recipe.data.cache_side_px, recipe.data.cache_box_scale)
    if cache_dir is not None and (cache_dir / "meta.json").exists():
        full = D.load_cache(cache_dir)
    else:
        full = D.cache_in_memory(D.load_faces(data, "train"), spec, recipe.data.workers)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(recipe.optim.seed))
    n_val = recipe.data.val_faces
    tr = D.FaceCache(full.images[perm[n_val:]], full.landmarks[perm[n_val:]], [])
    val = D.FaceCache(full.images[perm[:n_val]], full.landmarks[perm[:n_val]], []) if n_val else tr
    n_real = len(tr)
    if recipe.data.synth:
        tr, val = _mix_synthetic(tr, val, Path(recipe.data.synth).expanduser(), perm[:n_val])
    return tr, val, n_real, sampling_weights(tr.landmarks, n_real, recipe.data)


def augmentation_sheet(recipe: Recipe, tr: D.FaceCache, weights: torch.Tensor | None, out_png: Path,
                       count: int = 48, columns: int = 8, seed: int = 0) -> None:
    """A grid of training inputs exactly as the network gets them (sampled as training samples,
    expression edits, crop, photometry, occluders, degradations) with their landmarks (jaw red, eyes
    yellow), for a person to look at before a long run."""
    import cv2
    gen = torch.Generator().manual_seed(seed)
    idx = (torch.multinomial(weights, count, replacement=True, generator=gen) if weights is not None
           else torch.randint(0, len(tr), (count,), generator=gen))
    x, pts, _, _ = training_batch(tr, idx, replace(recipe, loss=replace(recipe.loss, consistency_weight=0.0)), gen, "cpu")
    mean, std = torch.tensor(D.IMAGENET_MEAN)[:, None, None], torch.tensor(D.IMAGENET_STD)[:, None, None]
    rgb = ((x * std + mean).clamp(0, 1) * 255).round().byte()
    jaw, eyes = set(scheme_for(pts.shape[1]).jaw), set(range(36, 48)) if pts.shape[1] == 68 else set()
    tiles = []
    for img, p in zip(rgb, pts):
        tile = np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1])
        for k, (px, py) in enumerate(p.numpy()):
            colour = (0, 0, 255) if k in jaw else (0, 255, 255) if k in eyes else (0, 255, 0)
            cv2.circle(tile, (int(round(px)), int(round(py))), 1, colour, -1)
        tiles.append(tile)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.concatenate(rows, 0))


def train(recipe: Recipe, data: str | Path | None, out_dir: Path, device: str = "auto", resume: Path | None = None,
          cache_dir: Path | None = None, log=print, init: Path | None = None) -> dict:
    rank, world = _ddp()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    o = recipe.optim
    torch.manual_seed(o.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    resumed = load_checkpoint(resume) if resume is not None else None   # a bad file fails before the data loads
    tr, val, n_real, weights = training_set(recipe, data, cache_dir)
    n_val = recipe.data.val_faces
    if rank == 0:
        log(f"training on {len(tr)} faces ({n_real} real), validating on {len(val)}"
            + (f"; pose-balanced sampling (power {recipe.data.balance_power}), synthetic share "
               f"{float(weights[n_real:].sum() / weights.sum()):.2f}" if weights is not None else ""))
    if dev.type == "cuda":  # the whole cache fits on the GPU; augmentation then never leaves it
        tr.images, val.images = tr.images.to(dev), val.images.to(dev)

    model = build_network(recipe.model).to(dev).to(memory_format=torch.channels_last)
    state = {"epoch": 0, "step": 0, "best_nme": float("inf"), "elapsed_s": 0.0, "start_real_nme": float("inf")}
    if init is not None and resume is None:
        load_into(model, _init_state(init, recipe.model), str(init))
    opt = torch.optim.Adam(trainable(model, o.train_only), lr=o.lr, weight_decay=o.weight_decay)
    if resumed is not None:
        model.load_state_dict(resumed["state_dict"])
        opt.load_state_dict(resumed["optimizer"])
        state.update({k: resumed[k] for k in state if k in resumed})
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    codec = recipe.hih_codec()
    teacher = load_teacher(recipe, dev)
    n_val_real = n_val if recipe.data.synth else 0
    guarded = o.real_val_tolerance > 0 and n_val_real > 0
    if guarded and resumed is None:
        state["start_real_nme"] = real_face_nme(model, val, n_val_real, recipe, dev)
        log(f"starting weights: real-face validation NME {state['start_real_nme']:.2f}; checkpoints above "
            f"{state['start_real_nme'] + o.real_val_tolerance:.2f} are not taken as best")

    steps_per_epoch = max(1, len(tr) // (o.batch_size * world))
    total_steps = steps_per_epoch * o.epochs
    gen = torch.Generator().manual_seed(o.seed + 1000 * rank + state["step"])
    log_path = out_dir / "log.csv"
    new_log = not log_path.exists() or resume is None
    logf = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["epoch", "step", "elapsed_s", "lr", "loss", "heatmap", "decimal"]
                        + [f"val_{d}" for d in DECODES] + (["val_real_hih"] if n_val_real else []))
    t0 = time.perf_counter() - state["elapsed_s"]
    amp = dev.type == "cuda"
    losses = []
    done = False
    while not done:
        if weights is None:
            sampler = torch.utils.data.DistributedSampler(range(len(tr)), world, rank, shuffle=True, seed=o.seed)
            sampler.set_epoch(state["epoch"])
            order = torch.tensor(list(sampler))
        else:
            g = torch.Generator().manual_seed(o.seed + 7919 * state["epoch"] + rank)
            order = torch.multinomial(weights, len(tr) // world, replacement=True, generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * o.batch_size:(b + 1) * o.batch_size]
            elapsed = time.perf_counter() - t0
            progress = elapsed / o.budget_s if o.budget_s > 0 else state["step"] / max(total_steps, 1)
            if progress >= 1:
                done = True
                break
            lr = o.lr * min(1.0, (state["step"] + 1) / o.warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))
            for g in opt.param_groups:
                g["lr"] = lr
            x, pts, a_to_b, edited = training_batch(tr, idx, recipe, gen, dev)
            views = len(x) // len(idx)
            real = (idx < n_real).repeat(views).to(dev)
            # the teacher has not seen an edited expression (it draws closed eyes open): it teaches the unedited
            taught = ((idx < n_real) & ~edited).repeat(views).to(dev)
            edited = edited.repeat(views).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                parts = forward_and_loss(net, recipe, codec, x.contiguous(memory_format=torch.channels_last), pts, a_to_b,
                                         teacher, real, taught, edited)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            state["step"] += 1
            losses.append([float(parts[k].detach()) for k in ("loss", "heatmap", "decimal")]
                          + [float(parts.get("consistency", torch.zeros(())).detach())])
            if rank == 0 and state["step"] % 20 == 0:
                eta = (1 - progress) * elapsed / max(progress, 1e-9)
                recent = np.mean(losses[-20:], 0)
                sys.stderr.write(f"\repoch {state['epoch']} step {state['step']} loss {recent[0]:.5f} "
                                 f"(hm {recent[1]:.5f} dec {recent[2]:.4f} cons {recent[3]:.4f}) lr {lr:.2e} ETA {eta / 60:.1f} min   ")
        state["epoch"] += 1
        state["elapsed_s"] = time.perf_counter() - t0
        if o.budget_s <= 0 and state["epoch"] >= o.epochs:
            done = True
        if rank == 0 and (done or state["epoch"] % o.eval_every_epochs == 0):
            errors = face_errors(model, val, recipe, dev)          # one pass: the real faces are its first rows
            res = {d: summarize(e) for d, e in errors.items()}
            real_nme = summarize(errors["hih"][:n_val_real])["nme"] if n_val_real else None
            mean_losses = np.mean(losses, 0)[:3] if losses else [float("nan")] * 3
            losses.clear()
            writer.writerow([state["epoch"], state["step"], round(state["elapsed_s"], 1), f"{lr:.3e}",
                             *[f"{v:.6f}" for v in mean_losses], *[f"{res[d]['nme']:.3f}" for d in DECODES]]
                            + ([f"{real_nme:.3f}"] if real_nme is not None else []))
            logf.flush()
            best_decode = min(res, key=lambda d: res[d]["nme"])
            log(f"\nepoch {state['epoch']} ({state['elapsed_s'] / 60:.1f} min) val NME "
                + " ".join(f"{d} {res[d]['nme']:.2f}" for d in DECODES)
                + (f"; real faces {real_nme:.2f}" if real_nme is not None else ""))
            ck = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "recipe": recipe.to_dict(),
                  "decode": best_decode, **state}
            save_checkpoint(ck, out_dir / "last.pt")
            if o.keep_epochs:
                save_checkpoint({k: v for k, v in ck.items() if k != "optimizer"}, out_dir / f"epoch_{state['epoch']:03d}.pt")
            allowed = not guarded or real_nme <= state["start_real_nme"] + o.real_val_tolerance
            if allowed and res[best_decode]["nme"] < state["best_nme"]:
                state["best_nme"] = ck["best_nme"] = res[best_decode]["nme"]
                save_checkpoint({k: v for k, v in ck.items() if k != "optimizer"}, out_dir / "best.pt")
    logf.close()
    if rank == 0:
        plot_log(log_path, out_dir / "training.png")
    if world > 1:
        dist.barrier()
    return state


def plot_log(log_path: Path, out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(log_path)))
    if not rows:
        return
    ep = [float(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [float(r["heatmap"]) for r in rows], label="heatmap MSE")
    a.set_yscale("log"); a.set_xlabel("epoch"); a.legend()
    a2 = a.twinx(); a2.plot(ep, [float(r["decimal"]) for r in rows], "r", label="decimal"); a2.legend(loc="upper center")
    for d in DECODES:
        b.plot(ep, [float(r[f"val_{d}"]) for r in rows], label=d)
    b.set_xlabel("epoch"); b.set_ylabel("val NME %"); b.set_ylim(top=min(15, b.get_ylim()[1])); b.legend()
    fig.tight_layout(); fig.savefig(out_png, dpi=90); plt.close(fig)
