"""The quantization-error study (paper Fig. 4, spec §7.5): the NME a representation costs with a
perfect network. Real ground-truth landmarks are encoded to heatmaps and decoded by each codec.

    python run.py bench quantization

Two paths per face: (a) the round trip alone, in crop pixels (landmarks -> heatmap -> landmarks);
(b) the whole image path: original image px -> similarity crop (the training crop: 1.3x the
landmark square) -> heatmap -> decode -> exact inverse -> original image px. NME is inter-ocular.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models import crop
from models.codec import HeatmapCodec, HIHCodec
from models.data import load_faces
from models.metrics import nme_per_face
from models.schemes import scheme_for

PAPER_ARGMAX_64 = {"300w": 1.11, "wflw": 1.29}
CODECS = {
    "argmax": lambda i, h: HeatmapCodec(i, h, refine="argmax"),
    "argmax+1/4": lambda i, h: HeatmapCodec(i, h, refine="quarter"),
    "centroid 5x5": lambda i, h: HeatmapCodec(i, h, refine="centroid"),
    "DARK": lambda i, h: HeatmapCodec(i, h, refine="dark"),
    "soft-argmax": lambda i, h: HeatmapCodec(i, h, refine="softargmax"),
    "HIH official (8x8, argmax)": lambda i, h: HIHCodec(i, h, 8, label="official", decimal_decode="argmax"),
    "HIH ours (8x8, expectation)": lambda i, h: HIHCodec(i, h, 8, label="normalized", decimal_decode="expectation"),
}
GEOMETRIES = [(256, 32), (256, 64), (256, 128), (128, 32)]   # (input px, heatmap px)


def round_trip(codec, pts_crop: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Encode and decode in chunks of faces (a 128x128 map per landmark is large)."""
    res = []
    for part in pts_crop.split(chunk):
        t = codec.encode(part)
        out = {"heatmaps": t["heatmap"]}
        if "decimal" in t:
            out["decimal"] = torch.log(t["decimal"].clamp_min(1e-12))
        res.append(codec.decode(out)[0])
    return torch.cat(res)


def study(datasets: dict[str, Path], log=lambda message: None) -> dict:
    results = {}
    for name, path in datasets.items():
        faces = load_faces(path, "test")
        gt = np.stack([f.landmarks_px for f in faces]).astype(np.float64)
        ocular = scheme_for(gt.shape[1]).ocular
        for step, (inp, hm) in enumerate(GEOMETRIES):
            log(f"{name}: geometry {inp}/{hm} ({step + 1}/{len(GEOMETRIES)}), {len(faces)} faces")
            mats = np.stack([crop.similarity(*crop.square_box(g, 1.3), inp) for g in gt])
            inv = np.stack([crop.invert(m) for m in mats])
            in_crop = crop.transform_points(mats, gt)
            for cname, make in CODECS.items():
                codec = make(inp, hm)
                dec = round_trip(codec, torch.from_numpy(in_crop).float()).double().numpy()
                crop_nme = nme_per_face(dec, in_crop, ocular).mean() * 100
                img_nme = nme_per_face(crop.transform_points(inv, dec), gt, ocular).mean() * 100
                results.setdefault(name, {}).setdefault(f"{inp}/{hm}", {})[cname] = {
                    "round_trip": round(float(crop_nme), 3), "image_path": round(float(img_nme), 3)}
        results[name]["faces"] = len(faces)
    return results


def write(results: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quantization.json").write_text(json.dumps(results, indent=1))
    lines = ["| dataset | input/heatmap | " + " | ".join(CODECS) + " |", "|---" * (len(CODECS) + 2) + "|"]
    for ds, per in results.items():
        for geo, vals in per.items():
            if geo == "faces":
                continue
            lines.append(f"| {ds} ({per['faces']}) | {geo} | " + " | ".join(
                f"{vals[c]['round_trip']:.3f}" + ("" if abs(vals[c]['image_path'] - vals[c]['round_trip']) < 5e-4
                                                 else f" ({vals[c]['image_path']:.3f})") for c in CODECS) + " |")
    lines += ["", "Paper (Fig. 4), argmax at 256/64: " + ", ".join(f"{k} {v}" for k, v in PAPER_ARGMAX_64.items())
              + ". A value in parentheses is the whole image path where it differs from the round trip."]
    md = "\n".join(lines) + "\n"
    (out_dir / "quantization.md").write_text(md)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (ds, per) in zip(axes[0], results.items()):
        sizes = [int(g.split("/")[1]) for g in per if g != "faces" and g.startswith("256/")]
        for c in CODECS:
            ax.plot(sizes, [per[f"256/{s}"][c]["round_trip"] for s in sizes], "o-", label=c)
        ax.scatter([64], [PAPER_ARGMAX_64.get(ds, np.nan)], marker="*", s=150, c="k", label="paper argmax", zorder=5)
        ax.set_xscale("log", base=2); ax.set_yscale("log"); ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("heatmap size (256 px input)"); ax.set_ylabel("quantization NME %"); ax.set_title(ds)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout(); fig.savefig(out_dir / "quantization.png", dpi=90); plt.close(fig)
    return md
