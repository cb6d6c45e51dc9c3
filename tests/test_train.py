"""The training signal works end to end on real faces; DDP (gloo, 2 processes) matches single-process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import data as D
from models.train import Recipe, evaluate_cache, train
from models.weights import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model": dict(num_landmarks=68, input_px=64, stacks=1, channels=64, depth=2, decimal_head="roi", roi_channels=8,
                  roi_hidden=64),
    "augment": dict(scale=0, rotate_p=0, shift=0, flip_p=0, brightness=0, contrast=0, saturation=0),
    "optim": dict(lr=2e-3, batch_size=8, epochs=800, warmup_steps=10, eval_every_epochs=800),
    "data": dict(val_faces=0),
}


@pytest.fixture(scope="module")
def tiny_cache(data_300w, tmp_path_factory):
    faces = D.load_faces(data_300w, "train")[:8]
    out = tmp_path_factory.mktemp("cache")
    D.build_cache(faces, out, D.CacheSpec(128, 1.8))
    return out


@pytest.mark.slow
def test_tiny_model_overfits_real_faces(tiny_cache, tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    recipe = Recipe.from_dict(TINY)
    state = train(recipe, None, tmp_path, "cpu", cache_dir=tiny_cache, log=lambda *_: None)
    ck = load_checkpoint(tmp_path / "best.pt")
    from models.network import build_network
    net = build_network(recipe.model)
    net.load_state_dict(ck["state_dict"])
    res = evaluate_cache(net, D.load_cache(tiny_cache), recipe, torch.device("cpu"))
    # untrained: ~50% NME; a working training signal memorises 8 faces (measured: 2.1%)
    assert res["hih"]["nme"] < 4.0, res
    # and the decimal map carries sub-cell information: it beats every integer-only decode
    # (measured: argmax 7.1, DARK 4.6)
    assert res["hih"]["nme"] < min(res[d]["nme"] for d in ("argmax", "quarter", "centroid", "dark", "softargmax"))
    assert state["step"] == 800
    assert (tmp_path / "log.csv").exists() and (tmp_path / "training.png").exists()


def test_augmentation_keeps_landmarks_on_the_image(tiny_cache):
    """One matrix moves image and landmarks: warping a dot image puts the dot where the point goes."""
    cache = D.load_cache(tiny_cache)
    img = torch.zeros_like(cache.images[:1])
    x0, y0 = cache.landmarks[0, 30].round().long().tolist()   # nose tip
    img[0, :, y0 - 1:y0 + 2, x0 - 1:x0 + 2] = 255
    dot = D.FaceCache(img, cache.landmarks[:1], [""])
    lm = dot.landmarks.clone()
    lm[0, 30] = torch.tensor([x0, y0], dtype=torch.float32)
    dot.landmarks = lm
    gen = torch.Generator().manual_seed(5)
    aug = D.AugmentConfig(brightness=0, contrast=0, saturation=0, flip_p=0.0)
    for _ in range(5):
        x, pts, _ = D.make_batch(dot, torch.tensor([0]), 64, aug, gen, torch.device("cpu"))
        heat = x[0].sum(0)
        y, xx = np.unravel_index(heat.argmax().item(), heat.shape)
        assert abs(xx - pts[0, 30, 0].item()) <= 1.0 and abs(y - pts[0, 30, 1].item()) <= 1.0


def test_flip_swaps_left_and_right(tiny_cache):
    cache = D.load_cache(tiny_cache)
    gen = torch.Generator().manual_seed(0)
    aug = D.AugmentConfig(scale=0, rotate_p=0, shift=0, flip_p=1.0, brightness=0, contrast=0, saturation=0)
    _, flipped, _ = D.make_batch(cache, torch.arange(4), 64, aug, gen, torch.device("cpu"))
    _, plain, _ = D.make_batch(cache, torch.arange(4), 64, None, gen, torch.device("cpu"))
    # point 36 (image-left eye corner) stays on the image left after flipping, 45 on the right
    assert (flipped[:, 36, 0] < flipped[:, 45, 0]).all() and (plain[:, 36, 0] < plain[:, 45, 0]).all()
    assert torch.allclose(flipped[:, 36, 0], 63 - plain[:, 45, 0], atol=1e-3)


DDP_SCRIPT = r"""
import sys, torch, json
from pathlib import Path
from models.train import Recipe, train
torch.manual_seed(0)
r = Recipe.from_dict({recipe!r})
train(r, None, Path(sys.argv[1]), "cpu", cache_dir=Path({cache!r}), log=lambda *_: None)
"""


@pytest.mark.slow
def test_ddp_gloo_matches_single_process(tiny_cache, tmp_path):
    """Two gloo processes with batch 4 each = one process with batch 8: same data, same loss."""
    base = {**TINY, "optim": dict(lr=1e-3, batch_size=8, epochs=3, warmup_steps=1, eval_every_epochs=3)}
    ddp = {**TINY, "optim": dict(lr=1e-3, batch_size=4, epochs=3, warmup_steps=1, eval_every_epochs=3)}
    logs = {}
    for name, recipe, launcher in (("single", base, [sys.executable]),
                                   ("ddp", ddp, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                                 "--master_port", "29531"])):
        script = tmp_path / f"{name}.py"
        script.write_text(DDP_SCRIPT.format(recipe=recipe, cache=str(tiny_cache)))
        out = tmp_path / name
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(launcher + [str(script), str(out)], check=True, env=env, timeout=300, capture_output=True)
        logs[name] = (out / "log.csv").read_text().splitlines()[-1].split(",")
    loss_single, loss_ddp = float(logs["single"][4]), float(logs["ddp"][4])
    # rank 0 logs its own half-batch loss; BN statistics differ per process: loose tolerance
    assert abs(loss_single - loss_ddp) / loss_single < 0.25, (loss_single, loss_ddp)


def test_resume_continues_from_the_checkpoint(tiny_cache, tmp_path):
    short = {**TINY, "optim": dict(lr=2e-3, batch_size=8, epochs=3, warmup_steps=1, eval_every_epochs=1)}
    train(Recipe.from_dict(short), None, tmp_path, "cpu", cache_dir=tiny_cache, log=lambda *_: None)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 3 and "optimizer" in ck
    longer = {**short, "optim": {**short["optim"], "epochs": 5}}
    state = train(Recipe.from_dict(longer), None, tmp_path, "cpu", resume=tmp_path / "last.pt", cache_dir=tiny_cache,
                  log=lambda *_: None)
    assert state["epoch"] == 5 and state["step"] == 5
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]   # the log was continued, not restarted


def test_a_shrunk_cache_is_the_cache_built_at_that_size(data_300w, tiny_cache, tmp_path):
    """shrink_cache (the carry for a training run elsewhere): the crops and landmarks a cache built at the
    smaller size has, for the entries kept, evenly spaced, with their per-entry metadata."""
    faces = D.load_faces(data_300w, "train")[:8]
    D.build_cache(faces, tmp_path / "direct", D.CacheSpec(64, 1.8))
    assert D.shrink_cache(tiny_cache, tmp_path / "shrunk", 64, quality=95, keep=5) == 5
    kept = [0, 2, 4, 5, 7]
    direct, shrunk = D.load_cache(tmp_path / "direct"), D.load_cache(tmp_path / "shrunk")
    assert shrunk.images.shape == (5, 3, 64, 64) and shrunk.subsets == [direct.subsets[i] for i in kept]
    np.testing.assert_allclose(shrunk.landmarks.numpy(), direct.landmarks[kept].numpy(), atol=1e-3)
    diff = (shrunk.images.float() - direct.images[kept].float()).abs().mean()
    assert diff < 6.0, diff    # two resamplings and JPEG encodings apart (measured 3.6); one px shifted: 12.1
    meta = json.loads((tmp_path / "shrunk" / "meta.json").read_text())
    assert meta["names"] == [f.image_path.name for f in (faces[i] for i in kept)] and meta["side_px"] == 64


def test_in_memory_cache_uses_worker_processes(data_300w):
    faces = D.load_faces(data_300w, "train")[:6]
    a = D.cache_in_memory(faces, D.CacheSpec(64, 1.8), workers=2)
    b = D.cache_in_memory(faces, D.CacheSpec(64, 1.8), workers=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)


def test_view_pairs_and_the_consistency_loss(tiny_cache):
    """The two views of a face are related by the returned matrix (landmarks map exactly); the
    consistency loss is zero for agreeing decodes, grows with disagreement and ignores a cell-off point."""
    from models.losses import consistency_loss
    cache = D.load_cache(tiny_cache)
    aug = D.AugmentConfig(noise_std=4.0)
    (xa, pa, _), (xb, pb, _), a_to_b = D.make_view_pair(cache, torch.arange(4), 64, aug, torch.Generator().manual_seed(1),
                                                        torch.device("cpu"))
    assert xa.shape == xb.shape == (4, 3, 64, 64) and not torch.equal(xa, xb)
    assert torch.allclose(D.crop.transform_points(a_to_b, pa), pb, atol=1e-3)
    assert 0 < (pb - pa).abs().max() < 6                     # a small move, not a different crop
    stride = 2.0
    assert consistency_loss(pb, pb, stride) == 0
    near = pb + 0.3
    assert 0 < consistency_loss(near, pb, stride) < consistency_loss(pb + 1.0, pb, stride)
    far = near.clone()
    far[:, 0] += 10 * stride                                 # a point a cell off is left out
    assert torch.isclose(consistency_loss(far, pb, stride), consistency_loss(near, pb, stride), rtol=0.05)


def test_init_from_a_wider_checkpoint_is_slimmed(tmp_path):
    """`train --init W --set model.bottleneck=0.25` starts from W's weights, slimmed to the narrower bottlenecks."""
    from dataclasses import replace

    from models.network import build_network
    from models.train import _init_state
    from models.weights import WeightsError, load_into, save_checkpoint
    recipe = Recipe.from_dict(TINY)
    wide = build_network(recipe.model)
    save_checkpoint({"state_dict": wide.state_dict(), "recipe": recipe.to_dict()}, tmp_path / "w.pt")
    narrow = replace(recipe.model, bottleneck=0.25)
    state = _init_state(tmp_path / "w.pt", narrow)
    build_network(narrow).load_state_dict(state)          # strict: every key and shape fits
    assert torch.equal(state["pre_conv.0.conv.weight"], wide.state_dict()["pre_conv.0.conv.weight"])
    deeper = replace(narrow, depth=3)                      # not a slimming: the checkpoint is refused as it is
    with pytest.raises(WeightsError):
        load_into(build_network(deeper), _init_state(tmp_path / "w.pt", deeper), "w.pt")


def test_the_decimal_head_relearns_alone_on_the_skip_sum(tiny_cache, tmp_path):
    """`train --init W --set model.head_input=skip --set optim.train_only=roi_head`: the network has no merge
    convs after its last stack and starts from W without them; only the ROI head learns, so every other
    weight and batch-norm statistic ends as W had it, and the integer heatmaps do not move."""
    from dataclasses import replace

    from models.network import build_network
    from models.schema import SettingsError
    from models.train import _init_state, trainable
    from models.weights import save_checkpoint
    torch.manual_seed(0)
    merged = Recipe.from_dict(TINY)
    start = build_network(merged.model)
    save_checkpoint({"state_dict": start.state_dict(), "recipe": merged.to_dict()}, tmp_path / "w.pt")
    skip = replace(merged.model, head_input="skip")
    assert not any(k.startswith(("hg0_conv1.", "hg0_conv2.")) for k in build_network(skip).state_dict())
    build_network(skip).load_state_dict(_init_state(tmp_path / "w.pt", skip))      # strict: every key fits
    recipe = Recipe.from_dict({**TINY, "model": {**TINY["model"], "head_input": "skip"},
                               "optim": {**TINY["optim"], "epochs": 4, "eval_every_epochs": 2, "train_only": "roi_head"}})
    train(recipe, None, tmp_path / "run", "cpu", cache_dir=tiny_cache, log=lambda *_: None, init=tmp_path / "w.pt")
    after = load_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    before = start.state_dict()
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("roi_head.") for k in moved), sorted(moved)[:5]
    assert "roi_head.fc1.weight" in moved and "roi_head.reduce.bn.running_mean" in moved
    for not_a_module in ("decimal", "cfg"):      # "cfg" is an attribute of the network, not a module
        with pytest.raises(SettingsError, match="roi_head"):
            trainable(build_network(skip), not_a_module)


def test_average_writes_the_mean_of_a_runs_checkpoints_and_refuses_another_network(tmp_path, capsys):
    """`hihtrack average`: floating-point tensors (batch-norm statistics too) are the mean, batch counts
    and the recipe come from the last, the optimizer state is dropped; the result loads and runs.
    A checkpoint of another network is refused in one line, and so is writing over an input."""
    from dataclasses import replace

    from hihtrack.cli import main
    from models.network import build_network
    from models.weights import load_into, save_checkpoint
    recipe = Recipe.from_dict(TINY)
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build_network(recipe.model)
        for m in net.modules():                      # distinct batch-norm statistics per checkpoint
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
        paths.append(tmp_path / f"epoch_{seed}.pt")
        save_checkpoint({"state_dict": net.state_dict(), "recipe": recipe.to_dict(), "optimizer": {"lr": seed}}, paths[-1])
    assert main(["average", *map(str, paths), "--out", str(tmp_path / "mean.pt")]) == 0
    mean, parts = load_checkpoint(tmp_path / "mean.pt"), [load_checkpoint(p)["state_dict"] for p in paths]
    assert "optimizer" not in mean and mean["recipe"] == recipe.to_dict()
    for k, v in mean["state_dict"].items():
        want = torch.stack([sd[k] for sd in parts]).mean(0) if v.is_floating_point() else parts[-1][k]
        torch.testing.assert_close(v, want)
    net = build_network(recipe.model)
    load_into(net, mean["state_dict"], "mean.pt")
    assert torch.isfinite(net.eval()(torch.randn(1, 3, 64, 64))["heatmaps"]).all()
    other = replace(recipe.model, channels=32)
    save_checkpoint({"state_dict": build_network(other).state_dict(), "recipe": recipe.to_dict()}, tmp_path / "other.pt")
    capsys.readouterr()
    assert main(["average", str(paths[0]), str(tmp_path / "other.pt"), "--out", str(tmp_path / "bad.pt")]) == 2
    assert main(["average", str(paths[0]), str(paths[1]), "--out", str(paths[1])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "same network" in err[0] and "new file" in err[1] and not (tmp_path / "bad.pt").exists()


def test_sampling_weights_give_the_synthetic_share_and_balance_poses():
    from models.train import DataConfig, sampling_weights
    gen = torch.Generator().manual_seed(0)
    frontal = torch.randn(100, 68, 2, generator=gen) + torch.tensor([0.0, 0.0])
    frontal[:, 0], frontal[:, 16], frontal[:, 30] = torch.tensor([-50.0, 0]), torch.tensor([50.0, 0]), torch.tensor([0.0, 10])
    frontal[:, 36], frontal[:, 45] = torch.tensor([-30.0, -20]), torch.tensor([30.0, -20])
    turned = frontal[:40].clone()
    turned[:, 30] = torch.tensor([-40.0, 10])                     # nose near the jaw's end: a profile
    lms = torch.cat([frontal, turned])                             # 100 real (frontal), 40 synthetic (turned)
    assert sampling_weights(lms, 100, DataConfig()) is None
    w = sampling_weights(lms, 100, DataConfig(synth_share=0.3))
    assert float(w[100:].sum() / w.sum()) == pytest.approx(0.3)
    both = torch.cat([frontal[:90], turned[:10]])                  # a real set that is 90 % frontal
    b = sampling_weights(both, 100, DataConfig(balance_power=1.0))
    assert float(b[90:].sum() / b.sum()) == pytest.approx(0.5)     # each pose bin equally often


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    """loss.distill_weight with loss.teacher: a student that already is the teacher has no heatmap
    distance to it (its decimal term is only the teacher's own entropy); a different student has,
    and a few steps on the distillation term alone shrink it. A teacher of another heatmap geometry
    is refused."""
    from dataclasses import replace

    from models.network import build_network
    from models.schema import SettingsError
    from models.train import forward_and_loss, load_teacher
    from models.weights import save_checkpoint
    torch.manual_seed(0)
    recipe = Recipe.from_dict(TINY)
    teacher_net = build_network(recipe.model)
    save_checkpoint({"state_dict": teacher_net.state_dict(), "recipe": recipe.to_dict()}, tmp_path / "t.pt")
    recipe = Recipe.from_dict({**TINY, "loss": {"teacher": str(tmp_path / "t.pt"), "distill_weight": 1.0}})
    teacher = load_teacher(recipe, torch.device("cpu"))
    codec = recipe.hih_codec()
    x, pts = torch.randn(4, 3, 64, 64), torch.rand(4, 68, 2) * 60
    same = build_network(recipe.model)
    same.load_state_dict(teacher_net.state_dict())
    student = build_network(recipe.model)
    hm = lambda net: float(forward_and_loss(net.eval(), recipe, codec, x, pts, teacher=teacher)["distill_heatmap"])  # noqa: E731
    assert hm(same) < 1e-9 < hm(student)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    before = hm(student)
    for _ in range(20):                         # the distillation term alone (BN statistics held: eval mode)
        opt.zero_grad()
        forward_and_loss(student.eval(), recipe, codec, x, pts, teacher=teacher)["distill"].backward()
        opt.step()
    assert hm(student) < 0.5 * before
    other = replace(recipe, model=replace(recipe.model, input_px=128))
    with pytest.raises(SettingsError, match="geometry"):
        load_teacher(other, torch.device("cpu"))


def test_a_larger_teacher_teaches_a_smaller_input_its_landmarks_where_it_would_put_them(data_300w):
    """loss.distill_target "landmarks": a shipped 128 px network teaches a 64 px student. Its targets
    decode, in the student's codec, to the landmarks the teacher finds on its own 128 px crop of the same
    faces, mapped to 64 px: no half-pixel shift from the resize (0.5 px on each axis at 128), and no
    more spread than the resize costs. Heatmap targets from it are refused, with what to set instead."""
    from dataclasses import replace

    from models.schema import SettingsError
    from models.train import load_teacher
    cache = D.cache_in_memory(D.load_faces(data_300w, "train")[:12], D.CacheSpec(256, 1.8))
    shipped = str(ROOT / "models/weights/hih_small_300w.pt")
    recipe = Recipe.from_dict({**TINY, "loss": {"teacher": shipped, "distill_weight": 1.0, "distill_target": "landmarks"}})
    teacher, student = load_teacher(recipe, torch.device("cpu")), recipe.hih_codec()
    (net, codec), = teacher.members
    assert (codec.input_px, student.input_px) == (128, 64)
    idx, gen = torch.arange(len(cache)), torch.Generator().manual_seed(0)
    x128, _, _ = D.make_batch(cache, idx, 128, None, gen, "cpu")
    x64, gt64, _ = D.make_batch(cache, idx, 64, None, gen, "cpu")
    with torch.no_grad():
        own128, _ = codec.decode(net(x128))
    cells = student.encode(gt64)["cells"]
    target = teacher.targets(x64, cells, student)
    taught64, _ = student.decode({"heatmaps": target["heatmap"], "decimal": target["decimal"].log(), "peak_cells": cells})
    diff_px = (taught64 + 0.5) * 2 - 0.5 - own128          # in the teacher's 128 px
    assert diff_px.mean((0, 1)).norm() < 0.35             # a half-pixel slip: (0.5, 0.5), 0.71 px
    assert diff_px.norm(dim=-1).median() < 1.5
    with pytest.raises(SettingsError, match="distill_target=landmarks"):
        load_teacher(replace(recipe, loss=replace(recipe.loss, distill_target="heatmaps")), torch.device("cpu"))


def test_several_teachers_teach_their_mean(data_300w, tmp_path):
    """loss.teacher "a.pt,b.pt": the targets are the members' mean. Landmarks: the two shipped 128 px
    networks teaching a 64 px student give targets that decode to the mean of what each teaches alone,
    not to either one. Heatmaps: the mean of the members' heatmaps and decimal distributions."""
    from models.network import build_network
    from models.train import load_teacher
    from models.weights import save_checkpoint
    cache = D.cache_in_memory(D.load_faces(data_300w, "train")[:12], D.CacheSpec(256, 1.8))
    x64, gt64, _ = D.make_batch(cache, torch.arange(len(cache)), 64, None, torch.Generator().manual_seed(0), "cpu")
    shipped = [str(ROOT / f"models/weights/hih_{name}_300w.pt") for name in ("small", "fast")]
    student = Recipe.from_dict(TINY).hih_codec()
    cells = student.encode(gt64)["cells"]

    def taught(teachers: list[str], target: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recipe = Recipe.from_dict({**TINY, "loss": {"teacher": ",".join(teachers), "distill_weight": 1.0,
                                                    "distill_target": target}})
        return load_teacher(recipe, torch.device("cpu")).targets(x, cells, student)

    def points(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return student.decode({"heatmaps": t["heatmap"], "decimal": t["decimal"].log(), "peak_cells": cells})[0]

    a, b = (points(taught([p], "landmarks", x64)) for p in shipped)
    both = points(taught(shipped, "landmarks", x64))
    apart_px = (a - b).norm(dim=-1).median()
    assert apart_px > 0.1                                   # the members disagree enough to tell them apart
    assert (both - (a + b) / 2).norm(dim=-1).median() < 0.25 * apart_px
    torch.manual_seed(0)
    tiny = Recipe.from_dict(TINY)
    for name in ("t1", "t2"):
        save_checkpoint({"state_dict": build_network(tiny.model).state_dict(), "recipe": tiny.to_dict()}, tmp_path / f"{name}.pt")
    x = torch.randn(len(cells), 3, 64, 64)
    t1, t2 = (taught([str(tmp_path / f"{n}.pt")], "heatmaps", x) for n in ("t1", "t2"))
    mean = taught([str(tmp_path / "t1.pt"), str(tmp_path / "t2.pt")], "heatmaps", x)
    for key in ("heatmap", "decimal"):
        assert not torch.allclose(t1[key], t2[key])
        torch.testing.assert_close(mean[key], (t1[key] + t2[key]) / 2)


def test_distillation_on_real_faces_only_leaves_the_synthetic_ones_out(tmp_path):
    """loss.distill_on "real": the distillation term is the one of the real rows alone (of those the
    teacher knows, when `taught` narrows them), and a batch without real faces has none."""
    from models.network import build_network
    from models.train import forward_and_loss, load_teacher
    from models.weights import save_checkpoint
    torch.manual_seed(0)
    recipe = Recipe.from_dict(TINY)
    save_checkpoint({"state_dict": build_network(recipe.model).state_dict(), "recipe": recipe.to_dict()}, tmp_path / "t.pt")
    recipe = Recipe.from_dict({**TINY, "loss": {"teacher": str(tmp_path / "t.pt"), "distill_weight": 1.0, "distill_on": "real"}})
    teacher, codec = load_teacher(recipe, torch.device("cpu")), recipe.hih_codec()
    student = build_network(recipe.model).eval()
    x, pts = torch.randn(4, 3, 64, 64), torch.rand(4, 68, 2) * 60
    real = torch.tensor([True, False, True, False])
    mixed = forward_and_loss(student, recipe, codec, x, pts, teacher=teacher, real=real)["distill"]
    alone = forward_and_loss(student, recipe, codec, x[real], pts[real], teacher=teacher)["distill"]
    assert float(mixed) == pytest.approx(float(alone), rel=1e-5)
    none = forward_and_loss(student, recipe, codec, x, pts, teacher=teacher, real=torch.zeros(4, dtype=torch.bool))
    assert "distill" not in none
    # a real face given an expression edit the teacher never saw (closed eyes) is not taught
    taught = torch.tensor([True, False, False, False])
    narrowed = forward_and_loss(student, recipe, codec, x, pts, teacher=teacher, real=real, taught=taught)["distill"]
    first = forward_and_loss(student, recipe, codec, x[taught], pts[taught], teacher=teacher)["distill"]
    assert float(narrowed) == pytest.approx(float(first), rel=1e-5)


@pytest.mark.slow
def test_guarded_selection_keeps_only_checkpoints_within_the_real_face_tolerance(tiny_cache, tmp_path):
    """optim.real_val_tolerance with a synthetic mix: the real validation faces are scored apart
    (log column val_real_hih), and best.pt is never a checkpoint whose real-face NME rose more than
    the tolerance above the starting weights'."""
    import csv
    import shutil

    from models.network import build_network
    from models.train import real_face_nme
    from models.weights import save_checkpoint
    synth = tmp_path / "synth"
    shutil.copytree(tiny_cache, synth)
    meta = json.loads((synth / "meta.json").read_text())
    (synth / "meta.json").write_text(json.dumps({**meta, "source_index": list(range(meta["count"]))}))
    torch.manual_seed(0)
    base = Recipe.from_dict(TINY)
    save_checkpoint({"state_dict": build_network(base.model).state_dict(), "recipe": base.to_dict()}, tmp_path / "init.pt")
    tol = 0.5
    recipe = Recipe.from_dict({**TINY, "optim": {**TINY["optim"], "epochs": 12, "eval_every_epochs": 1, "real_val_tolerance": tol},
                               "data": {"val_faces": 2, "synth": str(synth), "synth_share": 0.5}})
    lines = []
    state = train(recipe, None, tmp_path / "run", "cpu", cache_dir=tiny_cache, log=lines.append, init=tmp_path / "init.pt")
    start = state["start_real_nme"]
    assert any("real-face validation NME" in line for line in lines)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 12 and all(r["val_real_hih"] for r in rows)
    if (tmp_path / "run" / "best.pt").exists():
        ck = load_checkpoint(tmp_path / "run" / "best.pt")
        net = build_network(recipe.model)
        net.load_state_dict(ck["state_dict"])
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
        full = D.load_cache(tiny_cache)
        val = D.FaceCache(full.images[perm[:2]], full.landmarks[perm[:2]], [])
        assert real_face_nme(net, val, 2, recipe, torch.device("cpu")) <= start + tol + 1e-6
    allowed = [float(r["val_real_hih"]) <= start + tol for r in rows]
    assert (tmp_path / "run" / "best.pt").exists() == any(allowed)


def test_the_preview_sheet_shows_inputs_with_closed_eyes_where_the_recipe_asks(tiny_cache, tmp_path):
    """`train --preview`: a grid of inputs as the network gets them; with augment.eyes_closed_p=1 every
    face not turned far has an eye at least half closed."""
    from models.train import augmentation_sheet, training_batch, training_set
    recipe = Recipe.from_dict({**TINY, "augment": {**TINY["augment"], "eyes_closed_p": 1.0}})
    tr, val, n_real, weights = training_set(recipe, None, tiny_cache)
    assert len(tr) == n_real == 8 and val is tr and weights is None          # val_faces=0: no hold-out
    augmentation_sheet(recipe, tr, weights, tmp_path / "sheet.png", count=12, columns=5)
    import cv2
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (3 * 64, 5 * 64, 3)
    yellow = np.all(sheet == (0, 255, 255), axis=-1).sum()                   # the eye points are drawn
    assert yellow > 12 * 6
    _, pts, _, edited = training_batch(tr, torch.arange(8), recipe, torch.Generator().manual_seed(0), "cpu")
    assert edited.sum() >= 5                             # every face but those turned too far to edit
    from stream.expressions import ExpressionEstimator
    est = ExpressionEstimator()
    blinks = [est.blendshapes(p.numpy().astype(np.float64)) for p in pts[edited]]
    closed = [max(b["eyeBlinkLeft"], b["eyeBlinkRight"]) for b in blinks]
    assert min(closed) > 0.4, closed                                          # half-closed at least, one eye
