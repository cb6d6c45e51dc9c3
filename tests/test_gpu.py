"""CUDA path numerics (run where a CUDA GPU is present; skipped without one)."""
import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


def _faces(n=16):
    """Real-looking crops: the demo photo under varied similarity transforms."""
    from models import crop
    from stream.demo import DemoSource
    src = DemoSource(frames=n)
    frames, boxes = [], []
    for i in range(n):
        frames.append(src.render(i * 7))
        boxes.append(src.true_boxes(i * 7)[0])
    return frames, boxes, crop


def test_streams_match_plain_path_and_cpu():
    from models.engine import LandmarkEngine
    frames, boxes, _ = _faces()
    gpu = LandmarkEngine(device="cuda", precision="fp32", streams=2)
    cpu = LandmarkEngine(device="cpu", precision="fp32")
    crops = np.stack([gpu.crops(f, gpu.crop_matrices(c[None], np.array([s])))[0] for f, (c, s) in zip(frames, boxes)])
    # overlapped: several batches in flight on the slot ring, collected afterwards in order
    slots = [gpu.runner.submit(crops[i:i + 4]) for i in range(0, 8, 4)]
    streamed = np.concatenate([gpu.runner.collect(s) for s in slots])
    plain = np.concatenate([gpu.infer(crops[i:i + 4])[0] for i in range(0, 8, 4)])
    ref, _ = cpu.infer(crops[:8])
    assert np.abs(streamed[..., :2] - plain).max() < 1e-3
    # GPU vs CPU kernels: tiny float differences, except that a near-tie between two integer cells
    # can flip the argmax of a point (seen: one point moved 1.8 px on an H200); compare as NME
    io = np.linalg.norm(ref[:, 36] - ref[:, 45], axis=-1)
    nme = (np.linalg.norm(plain - ref, axis=-1).mean(-1) / io).mean() * 100
    print(f"GPU vs CPU NME {nme:.4f}%, median point difference {np.median(np.abs(plain - ref)):.5f} px")
    assert nme < 0.1 and np.median(np.abs(plain - ref)) < 0.01


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_close_to_fp32(precision):
    from models.engine import LandmarkEngine
    frames, boxes, _ = _faces()
    f32 = LandmarkEngine(device="cuda", precision="fp32")
    half = LandmarkEngine(device="cuda", precision=precision)
    crops = np.stack([f32.crops(f, f32.crop_matrices(c[None], np.array([s])))[0] for f, (c, s) in zip(frames, boxes)])
    a, _ = f32.infer(crops)
    b, _ = half.infer(crops)
    # NME between the two predictions, inter-ocular (points 36, 45), in %
    io = np.linalg.norm(a[:, 36] - a[:, 45], axis=-1)
    nme = (np.linalg.norm(a - b, axis=-1).mean(-1) / io).mean() * 100
    print(f"{precision} vs fp32 NME {nme:.3f}%")
    assert nme < 0.5


def test_the_tracking_path_on_cuda_goes_through_the_streams_and_matches_the_direct_path():
    """landmarks_many on CUDA (what tracking, extract and the web page call): frames uploaded on a
    slot's copy stream, cut into crops and run on its compute stream, downloaded asynchronously,
    with two batches on the ring at once; the same landmarks as the graph run directly, no streams."""
    import torch

    from models import crop
    from models.engine import LandmarkEngine
    frames, boxes, _ = _faces(8)
    eng = LandmarkEngine(device="cuda", precision="fp32", streams=2, views=1)
    items = [(f, eng.crop_matrices(c[None], np.array([s]))) for f, (c, s) in zip(frames, boxes)]
    pending = [eng.submit_many(items[:4]), eng.submit_many(items[4:])]
    streamed = [p[0] for batch in pending for p, _ in eng.collect_many(batch)]
    for (img, m), got in zip(items, streamed):
        with torch.inference_mode():
            direct = eng.runner.forward(eng.runner.crops_on_device(img, m)).cpu().numpy()[0, :, :2]
        want = crop.transform_points(crop.invert(m[0]), direct.astype(np.float64))
        assert np.abs(got - want).max() < 1e-3
