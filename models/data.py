"""Annotated-face loading, pre-cropping into a compact cache, and batched augmentation.

Two annotation styles are read: 300-W/iBUG `.pts` folders (1-based, converted once here) and
WFLW-style text lines (`x0 y0 ... [box] [attributes] image_name`, 0-based). Faces are pre-cropped
once (a square around the landmarks, generous enough for augmentation) into a cache of JPEGs +
landmarks, which also is what travels to a GPU machine. Augmentation runs on the training device,
in batch: one affine matrix per sample moves both the image (grid_sample) and its landmarks, so
the targets stay sub-pixel exact.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from models import crop
from models.degrade import degrade
from models.eyelids import close_eyes
from models.schema import IMAGE_EXTS, UserError
from models.schemes import scheme_for

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# 300-W subset folders (../shared/data/300w): the standard splits
SPLITS_300W = {"train": ("afw", "helen_trainset", "lfpw_trainset"), "test": ("helen_testset", "lfpw_testset")}


@dataclass
class Face:
    image_path: Path
    landmarks_px: np.ndarray                 # (K,2) float32, 0-based pixel centres
    attributes: dict[str, int] = field(default_factory=dict)
    subset: str = ""


class DataError(UserError, ValueError):
    """Bad or missing annotation data; the message says what and where."""


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().split("{", 1)[-1].split("}", 1)[0].split()
    pts = np.asarray(lines, np.float32).reshape(-1, 2)
    return pts - 1.0  # 300-W is 1-based


def load_pts_folder(folder: Path, subset: str = "") -> list[Face]:
    faces = []
    for pts in sorted(folder.glob("*.pts")):
        img = next((pts.with_suffix(e) for e in IMAGE_EXTS if pts.with_suffix(e).exists()), None)
        if img is not None:
            faces.append(Face(img, read_pts(pts), subset=subset or folder.name))
    return faces


WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


def load_wflw_lines(path: Path, images_root: Path | None = None) -> list[Face]:
    """WFLW `list_98pt_rect_attr` style: 196 coords, 4 box, 6 attribute flags, image name."""
    root = images_root or path.parent / "images"
    faces = []
    for line in path.read_text().splitlines():
        cols = line.split()
        if not cols:
            continue
        pts = np.asarray(cols[:196], np.float32).reshape(98, 2)
        attrs = dict(zip(WFLW_ATTRIBUTES, map(int, cols[200:206]))) if len(cols) >= 207 else {}
        faces.append(Face(root / cols[-1], pts, attrs, subset="wflw"))
    return faces


def load_faces(data: str | Path, split: str = "test") -> list[Face]:
    """Faces of a data folder: a 300-W root (split = train|test), a `.pts` folder, or a WFLW list."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"data path {data} does not exist; pass --data pointing at an annotated set")
    if data.is_file():
        return load_wflw_lines(data)
    if (data / "test_98pt_attr.txt").exists():
        if split == "train":
            raise DataError(f"{data} holds WFLW test faces only; never train on them")
        return load_wflw_lines(data / "test_98pt_attr.txt")
    if all((data / s).is_dir() for s in SPLITS_300W[split]):
        return [f for s in SPLITS_300W[split] for f in load_pts_folder(data / s)]
    faces = load_pts_folder(data)
    if not faces:
        raise DataError(f"no annotated faces found in {data} (expected .pts + image pairs, a 300-W root "
                        "or a WFLW folder with test_98pt_attr.txt)")
    return faces


# --------------------------------------------------------------------------------------------
# Pre-crop cache
# --------------------------------------------------------------------------------------------

@dataclass
class CacheSpec:
    side_px: int = 256       # stored crop size
    box_scale: float = 1.8   # stored square = box_scale x landmark-box side (room for augmentation)


def precrop(face: Face, spec: CacheSpec) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.imread(str(face.image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot read image {face.image_path}")
    center, side = crop.square_box(face.landmarks_px, spec.box_scale)
    m = crop.similarity(center, side, spec.side_px)
    # INTER_AREA when shrinking avoids aliasing in the stored crop
    interp = cv2.INTER_AREA if side > spec.side_px else cv2.INTER_LINEAR
    img = cv2.warpAffine(image, m, (spec.side_px,) * 2, flags=interp, borderValue=0)
    return img, crop.transform_points(m, face.landmarks_px.astype(np.float64)).astype(np.float32)


def _entry_file(i: int) -> str:
    """The file of a cache's i-th crop, where its meta.json lists no files of its own."""
    return f"{i:05d}.jpg"


def _cache_files(meta: dict) -> list[str]:
    """A cache's crop files, in entry order (synth-poses lists its own; build_cache numbers them)."""
    return meta.get("files") or [_entry_file(i) for i in range(meta["count"])]


def build_cache(faces: list[Face], out_dir: Path, spec: CacheSpec, quality: int = 93) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lms = []
    for i, face in enumerate(faces):
        img, pts = precrop(face, spec)
        cv2.imwrite(str(out_dir / _entry_file(i)), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lms.append(pts)
    np.save(out_dir / "landmarks.npy", np.stack(lms))
    meta = {"side_px": spec.side_px, "box_scale": spec.box_scale, "count": len(faces),
            "subsets": [f.subset for f in faces], "names": [f.image_path.name for f in faces]}
    (out_dir / "meta.json").write_text(json.dumps(meta))


def shrink_cache(src: Path, dst: Path, side_px: int, quality: int = 90, keep: int = 0) -> int:
    """A smaller copy of a cache folder (build_cache's or synth-poses'): every crop resized to side_px and
    its landmarks scaled with it; keep > 0 keeps that many entries, evenly spaced (a synthetic cache
    lists each face's views together, so every face keeps some). Per-entry metadata lists follow the
    entries kept. For a training run on another machine (bench/gpu_student.sh packs one). -> entries written."""
    meta = json.loads((src / "meta.json").read_text())
    count, files = meta["count"], _cache_files(meta)
    kept = np.linspace(0, count - 1, keep).round().astype(int) if 0 < keep < count else np.arange(count)
    scale = side_px / meta["side_px"]
    dst.mkdir(parents=True, exist_ok=True)
    names = [_entry_file(i) for i in range(len(kept))]
    for j, name in zip(kept, names):
        img = cv2.resize(cv2.imread(str(src / files[j])), (side_px, side_px), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(dst / name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    # a pixel's centre sits at (i + 0.5) / side of the crop at any size
    landmarks = (np.load(src / "landmarks.npy")[kept] + 0.5) * scale - 0.5
    np.save(dst / "landmarks.npy", landmarks.astype(np.float32))
    per_entry = {k: [v[j] for j in kept] for k, v in meta.items() if isinstance(v, list) and len(v) == count}
    (dst / "meta.json").write_text(json.dumps({**meta, **per_entry, "side_px": side_px, "count": len(kept), "files": names}))
    return len(kept)


@dataclass
class FaceCache:
    images: torch.Tensor      # (N,3,S,S) uint8, BGR
    landmarks: torch.Tensor   # (N,K,2) float32 in cache px
    subsets: list[str]

    def __len__(self) -> int:
        return len(self.images)


def load_cache(folder: Path) -> FaceCache:
    meta = json.loads((folder / "meta.json").read_text())
    files = _cache_files(meta)
    images = torch.from_numpy(np.stack([cv2.imread(str(folder / f)) for f in files])).permute(0, 3, 1, 2).contiguous()
    return FaceCache(images, torch.from_numpy(np.load(folder / "landmarks.npy")), meta["subsets"])


class _PrecropDataset(torch.utils.data.Dataset):
    def __init__(self, faces: list[Face], spec: CacheSpec):
        self.faces, self.spec = faces, spec

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int):
        return precrop(self.faces[i], self.spec)


def cache_in_memory(faces: list[Face], spec: CacheSpec, workers: int = 2) -> FaceCache:
    """Decode and pre-crop every face once, in DataLoader worker processes (JPEG decoding is the cost)."""
    loader = torch.utils.data.DataLoader(_PrecropDataset(faces, spec), batch_size=None, num_workers=workers,
                                         collate_fn=lambda x: x)
    crops = list(loader)
    images = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).contiguous()
    return FaceCache(images, torch.from_numpy(np.stack([c[1] for c in crops])), [f.subset for f in faces])


# --------------------------------------------------------------------------------------------
# Batched augmentation (any device)
# --------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    crop_scale: float = 1.3        # input crop = crop_scale x landmark-box side
    scale: float = 0.1             # U(1-s, 1+s)
    rotate_deg: float = 30.0
    rotate_p: float = 0.5
    shift: float = 0.05            # fraction of the input side
    flip_p: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    grayscale_p: float = 0.0       # a grey camera or an IR webcam: the colour channels made equal
    blur_p: float = 0.0
    occlusion_p: float = 0.0
    noise_std: float = 0.0         # per-pixel Gaussian sensor noise, grey levels (a webcam's still face)
    # faces as users show them (models.degrade): probabilities per sample
    real_occluder_p: float = 0.0   # a hand, an object, hair, glasses, a face mask or the frame edge, real textures
    motion_blur_p: float = 0.0
    defocus_p: float = 0.0
    low_light_p: float = 0.0       # dark exposure, gamma and strong sensor noise
    jpeg_p: float = 0.0            # quality 10-50
    eyes_closed_p: float = 0.0     # a blink, a wink or a squint made from open eyes, landmarks moved with the lids
                                   # (models.eyelids; 300-W has hardly any closed eyes)
    # second view for the consistency loss: a small extra similarity of the same crop
    pair_shift_px: float = 2.0     # U(+-) input px, sub-pixel
    pair_scale: float = 0.02       # U(1-s, 1+s)
    pair_rotate_deg: float = 2.0   # U(+-)


def nominal_matrices(landmarks: torch.Tensor, input_px: int, crop_scale: float) -> torch.Tensor:
    """(B,K,2) -> (B,2,3) similarity: a square crop_scale x the landmark box -> input px."""
    lo, hi = landmarks.amin(1), landmarks.amax(1)
    center = (lo + hi) / 2
    side = (hi - lo).amax(-1) * crop_scale
    s = input_px / side
    eye = torch.eye(2, dtype=landmarks.dtype, device=landmarks.device).expand(len(s), 2, 2) * s[:, None, None]
    t = (input_px - 1) / 2 - center * s[:, None]
    return torch.cat([eye, t[..., None]], -1)


def random_matrices(n: int, input_px: int, aug: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,2,3) augmentation affines about the crop centre (in input px) and the flip mask (n,)."""
    u = lambda: torch.rand(n, generator=gen)  # noqa: E731
    scale = 1 + (2 * u() - 1) * aug.scale
    angle = torch.where(u() < aug.rotate_p, (2 * u() - 1) * math.radians(aug.rotate_deg), torch.zeros(n))
    flip = u() < aug.flip_p
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * aug.shift * input_px
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    a = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
    a = a * torch.stack([torch.where(flip, -1.0, 1.0), torch.ones(n)], -1)[:, :, None]
    mid = torch.full((n, 2), (input_px - 1) / 2)
    t = mid - (a @ mid[..., None])[..., 0] + shift
    return torch.cat([a, t[..., None]], -1), flip


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Affine a after b, both (B,2,3)."""
    return torch.cat([a[..., :2] @ b[..., :2], (a[..., :2] @ b[..., 2:] + a[..., 2:])], -1)


def normalize(images_bgr: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) BGR in 0..255 (uint8 or float) -> float RGB ImageNet-normalised."""
    x = images_bgr.flip(1).float() / 255
    mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = x.new_tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def _photometric(x: torch.Tensor, aug: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x (B,3,H,W) float in [0,1]: brightness, contrast, saturation, grayscale, blur, occlusion."""
    b = x.shape[0]
    r = lambda amt: (1 + (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1) * amt).to(x.device)  # noqa: E731
    x = x * r(aug.brightness)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * r(aug.contrast) + mean
    gray = x.mean(1, keepdim=True)
    x = (x - gray) * r(aug.saturation) + gray
    if aug.grayscale_p > 0:
        grey = (torch.rand(b, 1, 1, 1, generator=gen) < aug.grayscale_p).to(x.device)
        x = torch.where(grey, x.mean(1, keepdim=True).expand_as(x), x)
    if aug.blur_p > 0:
        blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        x = torch.where((torch.rand(b, 1, 1, 1, generator=gen) < aug.blur_p).to(x.device), blurred, x)
    if aug.occlusion_p > 0:
        h, w = x.shape[-2:]
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        size = (torch.rand(b, 2, generator=gen) * 0.4 * torch.tensor([h, w])).to(x.device)
        top = (torch.rand(b, 2, generator=gen).to(x.device) * (torch.tensor([h, w], device=x.device) - size))
        inside = ((ys >= top[:, 0, None, None]) & (ys < (top[:, 0] + size[:, 0])[:, None, None])
                  & (xs >= top[:, 1, None, None]) & (xs < (top[:, 1] + size[:, 1])[:, None, None]))
        on = (torch.rand(b, generator=gen) < aug.occlusion_p).to(x.device)[:, None, None]
        colour = torch.rand(b, 3, 1, 1, generator=gen).to(x.device)
        x = torch.where((inside & on)[:, None], colour, x)
    return x.clamp(0, 1)


def make_batch(cache: FaceCache, idx: torch.Tensor, input_px: int, aug: AugmentConfig | None,
               gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (network input (B,3,S,S), landmarks in input px (B,K,2), crop->cache matrices (B,2,3)).

    Without `aug` this is the deterministic test crop. The inverse matrices map predictions
    back to the cache frame, where NME is measured.
    """
    m, flip = _view_matrices(cache, idx, input_px, aug, gen)
    return _render(cache, idx, m, flip, input_px, aug, gen, device)


def make_view_pair(cache: FaceCache, idx: torch.Tensor, input_px: int, aug: AugmentConfig, gen: torch.Generator,
                   device: torch.device) -> tuple[tuple, tuple, torch.Tensor]:
    """Two views of the same faces for the consistency loss: the second is the first moved by a small
    random similarity (sub-pixel shift, scale, rotation) with its own photometric draw and noise.

    -> (view a, view b, (B,2,3) matrix taking view-a input px to view-b input px); views as make_batch.
    """
    m_a, flip = _view_matrices(cache, idx, input_px, aug, gen)
    small = AugmentConfig(scale=aug.pair_scale, rotate_deg=aug.pair_rotate_deg, rotate_p=1.0,
                          shift=aug.pair_shift_px / input_px, flip_p=0.0)
    a_to_b = random_matrices(len(idx), input_px, small, gen)[0].double()
    view_a = _render(cache, idx, m_a, flip, input_px, aug, gen, device)
    view_b = _render(cache, idx, compose(a_to_b, m_a), flip, input_px, aug, gen, device)
    return view_a, view_b, a_to_b.float()


def edit_expressions(cache: FaceCache, idx: torch.Tensor, aug: AugmentConfig, gen: torch.Generator
                     ) -> tuple[FaceCache, torch.Tensor, torch.Tensor]:
    """Expression edits drawn for a batch's faces (eyes closed: aug.eyes_closed_p), before its views
    are cut, so that both views of a pair show the same face -> (a cache of the batch's faces, their
    indices in it, (B,) bool which were edited). Without edits: the cache and idx as they were."""
    unedited = torch.zeros(len(idx), dtype=torch.bool)
    if aug.eyes_closed_p <= 0 or cache.landmarks.shape[1] != 68:
        return cache, idx, unedited
    images, landmarks, edited = close_eyes(cache.images[idx], cache.landmarks[idx], aug.eyes_closed_p, gen)
    return FaceCache(images, landmarks, []), torch.arange(len(idx)), edited


def _view_matrices(cache: FaceCache, idx: torch.Tensor, input_px: int, aug: AugmentConfig | None,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,2,3) cache->input matrices (float64) and the flip mask (B,)."""
    m = nominal_matrices(cache.landmarks[idx].double(), input_px, aug.crop_scale if aug else AugmentConfig.crop_scale)
    flip = torch.zeros(len(idx), dtype=torch.bool)
    if aug is not None:
        a, flip = random_matrices(len(idx), input_px, aug, gen)
        m = compose(a.double(), m)
    return m, flip


def _render(cache: FaceCache, idx: torch.Tensor, m: torch.Tensor, flip: torch.Tensor, input_px: int,
            aug: AugmentConfig | None, gen: torch.Generator, device: torch.device):
    pts = crop.transform_points(m, cache.landmarks[idx].double())
    if flip.any():
        perm = torch.as_tensor(scheme_for(pts.shape[1]).flip)
        pts = torch.where(flip[:, None, None], pts[:, perm], pts)
    images = cache.images[idx].to(device, non_blocking=True).float()
    x = crop.warp_batch(images, m.to(device).float(), input_px) / 255
    if aug is not None:
        x = _photometric(x, aug, gen)
        x = degrade(x, pts.float(), aug, gen)
        if aug.noise_std > 0:
            x = x + torch.randn(x.shape, generator=gen).to(x.device) * (aug.noise_std / 255)
    x = normalize((x * 255).round().clamp(0, 255))  # quantised like the uint8 frames seen at inference
    return x, pts.float().to(device), m.float()
