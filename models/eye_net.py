"""The eye network (models.eyes uses it at run time): its layers, its training on MediaPipe's iris
pseudo-labels and the annotated eye outline, its evaluation, and its export as an ONNX graph of uint8
eye crops."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import crop
from models.eyes import EYE_PX, OUTLINE, POINTS, eye_crop_matrices


def eye_matrices(landmarks_px: torch.Tensor, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """models.eyes.eye_crop_matrices on tensors: (B,68,2) [, (B,2,4)] -> (B,2,2,3) float64."""
    j = None if jitter is None else jitter.double().numpy()
    return torch.from_numpy(eye_crop_matrices(landmarks_px.double().numpy(), j))


class EyeNet(nn.Module):
    """(N,3,32,32) ImageNet-normalised RGB eye crops -> (N,POINTS,2) in crop px: the pupil, then the
    outline in OUTLINE's order (each the soft-argmax of its own 16x16 heatmap, stride 2)."""

    def __init__(self, width: int):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.encoder = nn.Sequential(block(3, width, 1), block(width, width, 2), block(width, 2 * width, 1),
                                     block(2 * width, 2 * width, 2), block(2 * width, 2 * width, 1))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     block(2 * width, width, 1), nn.Conv2d(width, POINTS, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.encoder(x))                          # (N,P,16,16)
        n, k, h, w = logits.shape
        p = logits.flatten(2).softmax(-1).view(n, k, h, w)
        stride = EYE_PX / w
        xs = (torch.arange(w, device=x.device, dtype=p.dtype) + 0.5) * stride - 0.5
        ys = (torch.arange(h, device=x.device, dtype=p.dtype) + 0.5) * stride - 0.5
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


def eye_points(landmarks_px: torch.Tensor, pupils_px: torch.Tensor) -> torch.Tensor:
    """(B,68,2) + (B,2,2) -> (B,2,POINTS,2): per eye the pupil, then its outline in OUTLINE's order."""
    return torch.stack([torch.cat([pupils_px[:, e, None], landmarks_px[:, list(OUTLINE[e])]], 1) for e in range(2)], 1)


def eye_batch(images: torch.Tensor, landmarks_px: torch.Tensor, jitter: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B,3,H,W) uint8/float BGR, landmarks (B,68,2) -> (crops (B*2,3,32,32) normalised,
    matrices (B,2,2,3)); crop b*2+e is eye e of face b."""
    from models.data import normalize
    m = eye_matrices(landmarks_px, jitter)
    img = images.float()
    crops = torch.stack([crop.warp_batch(img, m[:, e].float(), EYE_PX) for e in range(2)], 1)   # (B,2,3,S,S)
    return normalize(crops.flatten(0, 1)), m


def to_image(crop_pts: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B*2,P,2) crop px + (B,2,2,3) matrices -> (B,2,P,2) image px."""
    full = torch.cat([m, m.new_tensor([0, 0, 1]).expand(*m.shape[:2], 1, 3)], -2)
    inv = torch.linalg.inv(full)[..., :2, :]
    return crop.transform_points(inv, crop_pts.reshape(*m.shape[:2], -1, 2).double())


@dataclass
class EyeTrainConfig:
    width: int = 16                 # channels of the first layers (the middle ones have twice as many); 32 cost
                                    # 3x the time for the same WFLW pupils (models/weights/MODEL_CARD.md)
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    jitter_shift: float = 0.06      # eye-centre noise, corner distances (the tracker's eye error is ~0.05)
    jitter_scale: float = 0.1
    jitter_rotate_deg: float = 6.0
    closed_eye_p: float = 0.2       # faces whose eyes are closed or half closed (models.eyelids): 300-W has few
    seed: int = 0


def train_eye_net(images: torch.Tensor, landmarks: torch.Tensor, pupils: torch.Tensor, val: tuple, cfg: EyeTrainConfig,
                  log=print) -> tuple[EyeNet, dict]:
    """images (N,3,S,S) uint8 BGR, landmarks (N,68,2), pupils (N,2,2) in the same px; val likewise.
    Photometric jitter as the landmark training (brightness, contrast, blur via models.data)."""
    from models.data import AugmentConfig
    from models.eyelids import close_eyes
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = EyeNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    photo = AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4, grayscale_p=0.1, blur_p=0.2)
    history = []
    for step in range(cfg.steps):
        net.train()
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        shut_images, shut_landmarks, shut = close_eyes(images[idx], landmarks[idx], cfg.closed_eye_p, g)
        jit = torch.cat([(torch.rand(cfg.batch_size, 2, 2, generator=g) * 2 - 1) * cfg.jitter_shift,
                         (torch.rand(cfg.batch_size, 2, 1, generator=g) * 2 - 1) * cfg.jitter_scale,
                         (torch.rand(cfg.batch_size, 2, 1, generator=g) * 2 - 1) * math.radians(cfg.jitter_rotate_deg)], -1)
        # cut around the open eye's outline: the landmarks a closed eye is cut from may have missed the closing
        x, m = eye_batch(shut_images, landmarks[idx], jit)
        x = _renormalize(x, photo, g)
        target = crop.transform_points(m, eye_points(shut_landmarks, pupils[idx]).double()).flatten(0, 1).float()
        pred = net(x)
        weight = torch.ones(len(pred), POINTS)
        weight[:, 0] = (~shut).repeat_interleave(2).float()            # a closing lid hides the pupil
        per_point = torch.nn.functional.smooth_l1_loss(pred, target, beta=0.5, reduction="none").sum(-1)
        loss = (per_point * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == cfg.steps:
            err = evaluate_eye_net(net, *val)
            history.append({"step": step + 1, "loss": float(loss.detach()), **{f"val_{k}_io": v for k, v in err.items()}})
            log(f"eyes step {step + 1}/{cfg.steps} loss {float(loss.detach()):.3f} val mean error: pupils "
                f"{100 * err['pupils']:.2f}, outline {100 * err['outline']:.2f} % IO")
    return net, {"history": history}


def _renormalize(x: torch.Tensor, aug, gen: torch.Generator) -> torch.Tensor:
    """Photometric augmentation on normalised crops: back to [0,1], jitter, normalise again."""
    from models.data import IMAGENET_MEAN, IMAGENET_STD, _photometric
    mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = x.new_tensor(IMAGENET_STD)[:, None, None]
    rgb = _photometric((x * std + mean).clamp(0, 1), aug, gen)
    return (rgb - mean) / std


@torch.inference_mode()
def evaluate_eye_net(net: EyeNet, images: torch.Tensor, landmarks: torch.Tensor, pupils: torch.Tensor) -> dict[str, float]:
    """Mean error / outer-eye-corner distance of the pupils and of the outline, crops from the given landmarks."""
    net.eval()
    err = (predict(net, images, landmarks) - eye_points(landmarks, pupils)).norm(dim=-1)     # (B,2,P)
    io = (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1)[:, None, None]
    err = err / io
    return {"pupils": float(err[..., 0].mean()), "outline": float(err[..., 1:].mean())}


@torch.inference_mode()
def predict(net: EyeNet, images: torch.Tensor, landmarks: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(B,3,H,W) images + (B,68,2) landmarks -> (B,2,POINTS,2) image px: per eye the pupil, then the outline."""
    net.eval()
    out = []
    for s in range(0, len(images), batch):
        x, m = eye_batch(images[s:s + batch], landmarks[s:s + batch].float())
        out.append(to_image(net(x), m).float())
    return torch.cat(out)


def training_data(data: str | Path, synth: Path, val_every: int = 20) -> tuple[tuple, tuple]:
    """(train, val), each (images uint8 (N,3,256,256), landmarks (N,68,2), pupils (N,2,2)): the 300-W
    training faces with MediaPipe's iris centres, plus their synthetic views (models.profiling). Every
    val_every-th source face and its views are held out."""
    import json

    from models.data import CacheSpec, cache_in_memory, load_cache, load_faces
    meta = json.loads((synth / "meta.json").read_text())
    records = [json.loads((synth / f"{i:05d}.json").read_text()) for i in range(meta["source_faces"])]
    real_ok = [i for i, r in enumerate(records) if "source_pupils_px" in r]
    faces = load_faces(data, "train")
    real = cache_in_memory([faces[i] for i in real_ok], CacheSpec(meta["side_px"], meta["box_scale"]), workers=2)
    syn = load_cache(synth)
    images = torch.cat([real.images, syn.images])
    landmarks = torch.cat([real.landmarks, syn.landmarks])
    pupils = torch.cat([torch.tensor([records[i]["source_pupils_px"] for i in real_ok], dtype=torch.float32),
                        torch.from_numpy(np.load(synth / "pupils.npy"))])
    source = torch.cat([torch.tensor(real_ok), torch.tensor(meta["source_index"])])
    held = source % val_every == 0
    pick = lambda sel: (images[sel], landmarks[sel], pupils[sel])  # noqa: E731
    return pick(~held), pick(held)


class EyeGraph(nn.Module):
    """What runs at run time: (N,32,32,3) uint8 BGR eye crops -> (N,POINTS,2) in crop px."""

    def __init__(self, net: EyeNet):
        super().__init__()
        self.net = net

    def forward(self, crops_u8: torch.Tensor) -> torch.Tensor:
        from models.data import normalize
        return self.net(normalize(crops_u8.permute(0, 3, 1, 2)))


def load_eye_net(weights: Path) -> EyeNet:
    from models.weights import load_checkpoint, load_into
    ck = load_checkpoint(weights)
    net = EyeNet(EyeTrainConfig(**ck.get("config", {})).width)
    load_into(net, ck["state_dict"], str(weights))
    return net.eval()


def export_eye_graph(weights: Path, path: Path) -> None:
    """The eye network of `weights` as ONNX (models.onnx_cache caches it per weights file)."""
    from models.weights import export_onnx
    with torch.no_grad():
        export_onnx(EyeGraph(load_eye_net(weights)), path, torch.zeros(1, EYE_PX, EYE_PX, 3, dtype=torch.uint8),
                    ["eyes"], {"eye_px": EYE_PX})
