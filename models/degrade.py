"""Occluders and camera degradations that look like the faces users show: a hand at the chin, a phone,
hair across the eyes, glasses, a face mask, a face cut by the frame edge; motion blur, defocus, low
light with sensor noise, JPEG.

Occluders take real texture from *another* face of the same batch (skin for a hand, the top of the
crop for hair, anything for an object), placed where it covers landmarks, with a feathered edge.
Every function takes and returns a batch x (B,3,H,W) float in [0,1] on any device; shapes are drawn
per sample on the CPU with OpenCV (cheap at the network's input size) and applied as masks.
The probabilities are fields of models.data.AugmentConfig (0 = off).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EYE_A, EYE_B = range(36, 42), range(42, 48)      # iBUG eye outlines
LOWER_FACE = list(range(2, 15)) + [29]           # a face mask: cheeks and jaw below the nose bridge


# --------------------------------------------------------------------------------------------
# Occluder shapes: (H,W) float32 masks in [0,1], drawn around the sample's landmarks
# --------------------------------------------------------------------------------------------

def _hand(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A palm and four fingers, reaching in from below or the side towards a random landmark."""
    m = np.zeros((side, side), np.float32)
    target = pts[rng.choice([8, 57, 48, 54, 30, 3, 13, 36, 45])]
    scale = np.ptp(pts[:, 0]) * rng.uniform(0.35, 0.6)
    angle = rng.uniform(0, 2 * math.pi)
    d = np.array([math.cos(angle), math.sin(angle)])
    palm = target + d * scale * 0.9
    cv2.ellipse(m, _pt(palm), (int(scale * 0.55), int(scale * 0.45)), math.degrees(angle), 0, 360, 1.0, -1)
    n = np.array([-d[1], d[0]])
    for f in range(4):
        base = palm + n * (f - 1.5) * scale * 0.22 - d * scale * 0.3
        tip = base - d * scale * rng.uniform(0.45, 0.8)
        cv2.line(m, _pt(base), _pt(tip), 1.0, max(2, int(scale * 0.17)), cv2.LINE_AA)
    return m


def _object(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotated, rounded box (a phone, a cup, a microphone) over part of the face."""
    m = np.zeros((side, side), np.float32)
    centre = pts[rng.integers(len(pts))] + rng.normal(0, 0.05 * side, 2)
    w, h = np.ptp(pts, 0) * rng.uniform(0.2, 0.55, 2)
    box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(w), float(h)), float(rng.uniform(0, 180))))
    cv2.fillConvexPoly(m, np.round(box).astype(np.int32), 1.0, cv2.LINE_AA)
    return m


def _hair(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Strands falling across the brows and eyes."""
    m = np.zeros((side, side), np.float32)
    top = pts[17:27].min(0)[1] - 0.15 * side
    for _ in range(rng.integers(4, 14)):
        x0 = rng.uniform(pts[:, 0].min(), pts[:, 0].max())
        xs = x0 + np.cumsum(rng.normal(0, side * 0.02, 6))
        ys = np.linspace(top, pts[36:48, 1].max() + rng.uniform(0, 0.2) * side, 6)
        cv2.polylines(m, [np.round(np.stack([xs, ys], 1) * 16).astype(np.int32)], False, 1.0,
                      int(rng.integers(1, 4)), cv2.LINE_AA, shift=4)
    return m


def _glasses(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two frames round the eyes and a bridge; filled (sunglasses) or rims only."""
    m = np.zeros((side, side), np.float32)
    thick = -1 if rng.random() < 0.4 else int(rng.integers(1, 4))
    centres = []
    for eye in (EYE_A, EYE_B):
        e = pts[list(eye)]
        c = e.mean(0)
        centres.append(c)
        axes = (int(np.ptp(e[:, 0]) * rng.uniform(0.75, 1.0)), int(np.ptp(e[:, 0]) * rng.uniform(0.45, 0.7)))
        cv2.ellipse(m, _pt(c), axes, 0, 0, 360, 1.0, thick, cv2.LINE_AA)
    cv2.line(m, _pt(centres[0]), _pt(centres[1]), 1.0, 2, cv2.LINE_AA)
    return m


def _face_mask(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A medical or cloth mask over the nose and mouth."""
    m = np.zeros((side, side), np.float32)
    poly = pts[LOWER_FACE] + rng.normal(0, 0.01 * side, (len(LOWER_FACE), 2))
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    return m


def _frame_edge(side: int, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The camera frame cuts through the face: everything beyond a line near one side is gone."""
    m = np.zeros((side, side), np.float32)
    lo, hi = pts.min(0), pts.max(0)
    axis = int(rng.integers(2))
    cut = rng.uniform(0.1, 0.35)
    if rng.random() < 0.5:
        edge = int(lo[axis] + cut * (hi[axis] - lo[axis]))
        (m[:, :edge] if axis == 0 else m[:edge]).fill(1.0)
    else:
        edge = int(hi[axis] - cut * (hi[axis] - lo[axis]))
        (m[:, edge:] if axis == 0 else m[edge:]).fill(1.0)
    return m


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


OCCLUDERS = {"hand": _hand, "object": _object, "hair": _hair, "glasses": _glasses, "mask": _face_mask,
             "edge": _frame_edge}
# Texture source per occluder: the other face's centre (skin) for a hand, its top rows (hair) for hair.
_TEXTURE = {"hand": "centre", "hair": "top", "glasses": "dark", "edge": "black"}


def occlude(x: torch.Tensor, pts: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """x (B,3,H,W) in [0,1], pts (B,K,2) input px (68-point scheme for glasses and masks)."""
    b, _, h, w = x.shape
    on = (torch.rand(b, generator=gen) < p).tolist()
    if not any(on):
        return x
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
    other = x.roll(1, 0)
    masks = torch.zeros(b, 1, h, w)
    fills = x.clone()
    names = list(OCCLUDERS)
    p68 = pts.shape[1] >= 68
    for i in np.flatnonzero(on):
        name = names[rng.integers(len(names))] if p68 else ("object" if rng.random() < 0.5 else "edge")
        m = OCCLUDERS[name](h, pts[i].cpu().numpy().astype(np.float64), rng)
        masks[i, 0] = torch.from_numpy(cv2.GaussianBlur(m, (0, 0), rng.uniform(0.5, 1.5)))
        fills[i] = _texture(other[i], _TEXTURE.get(name, "shifted"), rng)
    masks = masks.to(x.device)
    return x * (1 - masks) + fills * masks


def _texture(img: torch.Tensor, where: str, rng: np.random.Generator) -> torch.Tensor:
    """(3,H,W) texture for an occluder, taken from another face's crop."""
    _, h, w = img.shape
    if where == "black":
        return torch.zeros_like(img)
    if where == "dark":
        return img.mean(0, keepdim=True).expand_as(img) * rng.uniform(0.05, 0.3)
    if where == "centre":       # skin: magnify the other face's cheek region to fill the frame
        c = torch.tensor([[w / 2 + rng.uniform(-0.1, 0.1) * w, h * 0.6]])
        s = rng.uniform(0.2, 0.35)
        theta = torch.tensor([[[s, 0, (c[0, 0] / w * 2 - 1)], [0, s, (c[0, 1] / h * 2 - 1)]]], dtype=img.dtype)
        grid = F.affine_grid(theta.to(img.device), (1, 3, h, w), align_corners=False)
        return F.grid_sample(img[None], grid, align_corners=False, padding_mode="reflection")[0]
    if where == "top":          # hair: the other crop's top rows, stretched down
        rows = max(2, int(h * 0.12))
        return F.interpolate(img[None, :, :rows], size=(h, w), mode="bilinear", align_corners=False)[0]
    dy, dx = rng.integers(-h // 3, h // 3 + 1, 2)
    return img.roll((int(dy), int(dx)), (1, 2))


# --------------------------------------------------------------------------------------------
# Camera degradations
# --------------------------------------------------------------------------------------------

KERNEL_PX = 11


def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    k = np.zeros((KERNEL_PX, KERNEL_PX), np.float32)
    length, angle = rng.uniform(3, KERNEL_PX), rng.uniform(0, math.pi)
    c = KERNEL_PX // 2
    d = np.array([math.cos(angle), math.sin(angle)]) * (length - 1) / 2
    cv2.line(k, _pt((c - d[0], c - d[1])), _pt((c + d[0], c + d[1])), 1.0, 1, cv2.LINE_AA)
    return k / k.sum()


def _defocus_kernel(rng: np.random.Generator) -> np.ndarray:
    k = np.zeros((KERNEL_PX, KERNEL_PX), np.float32)
    cv2.circle(k, (KERNEL_PX // 2,) * 2, int(rng.integers(1, KERNEL_PX // 2)), 1.0, -1, cv2.LINE_AA)
    return k / k.sum()


def blur(x: torch.Tensor, p_motion: float, p_defocus: float, gen: torch.Generator) -> torch.Tensor:
    """Per-sample motion blur (a line of random length and angle) or defocus (a disc)."""
    b = x.shape[0]
    u = torch.rand(b, generator=gen).tolist()
    if not any(v < p_motion + p_defocus for v in u):
        return x
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
    ident = np.zeros((KERNEL_PX, KERNEL_PX), np.float32)
    ident[KERNEL_PX // 2, KERNEL_PX // 2] = 1
    kernels = [_motion_kernel(rng) if v < p_motion else _defocus_kernel(rng) if v < p_motion + p_defocus else ident
               for v in u]
    k = torch.from_numpy(np.stack(kernels)).to(x.device, x.dtype)          # (B,k,k)
    weight = k[:, None].repeat_interleave(3, 0)                            # (B*3,1,k,k)
    y = F.conv2d(F.pad(x.reshape(1, -1, *x.shape[-2:]), (KERNEL_PX // 2,) * 4, mode="replicate"), weight, groups=3 * b)
    return y.reshape_as(x)


def low_light(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """A dark room: exposure down, gamma, then sensor noise that is large against the signal."""
    b = x.shape[0]
    on = (torch.rand(b, 1, 1, 1, generator=gen) < p).to(x.device)
    gain = (0.15 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen)).to(x.device)
    gamma = (1.0 + 0.6 * torch.rand(b, 1, 1, 1, generator=gen)).to(x.device)
    sigma = ((4 + 10 * torch.rand(b, 1, 1, 1, generator=gen)) / 255).to(x.device)
    noise = torch.randn(x.shape, generator=gen).to(x.device) * sigma
    dark = (x.clamp(0, 1) ** gamma) * gain + noise
    return torch.where(on, dark.clamp(0, 1), x)


def jpeg(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Heavy JPEG compression (quality 10-50), as a low-bandwidth stream or a re-shared photo."""
    b = x.shape[0]
    u = torch.rand(b, generator=gen)
    q = torch.randint(10, 51, (b,), generator=gen)
    if not (u < p).any():
        return x
    out = x.clone()
    for i in torch.nonzero(u < p)[:, 0].tolist():
        img = (x[i].permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q[i])])
        out[i] = torch.from_numpy(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)).permute(2, 0, 1).to(x) / 255
    return out


def degrade(x: torch.Tensor, pts: torch.Tensor, cfg, gen: torch.Generator) -> torch.Tensor:
    """All of the above in the order a camera applies them: the scene (occluders), the optics (blur),
    the sensor (low light), the encoder (JPEG). cfg: models.data.AugmentConfig (its probabilities)."""
    if cfg.real_occluder_p > 0:
        x = occlude(x, pts, cfg.real_occluder_p, gen)
    if cfg.motion_blur_p + cfg.defocus_p > 0:
        x = blur(x, cfg.motion_blur_p, cfg.defocus_p, gen)
    if cfg.low_light_p > 0:
        x = low_light(x, cfg.low_light_p, gen)
    if cfg.jpeg_p > 0:
        x = jpeg(x, cfg.jpeg_p, gen)
    return x
