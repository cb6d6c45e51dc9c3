"""Network size vs the paper, official checkpoint keys, safe weight loading, ONNX equivalence."""
import pickle

import numpy as np
import pytest
import torch

from models.network import build_network, count_params
from models.weights import WeightsError, export_onnx, file_sha256, load_checkpoint, load_into, official_state_dict, save_checkpoint

PAPER = dict(num_landmarks=98, input_px=256, channels=256, depth=4, head_channels=384, decimal_head="global",
             keep_unused_skip=True)


@pytest.mark.parametrize("stacks,params_m,keys", [(1, 10.37, None), (2, 14.47, None), (4, 22.68, 1552)])
def test_paper_sizes(stacks, params_m, keys):
    """Spec §2.4: HIH_T/S/B parameter counts (with the official dead skip layers), §2.5 key count."""
    net = build_network({**PAPER, "stacks": stacks})
    assert round(count_params(net) / 1e6, 2) == params_m
    if keys:
        assert len(net.state_dict()) == keys


def test_official_checkpoint_layout_loads(tmp_path):
    """A checkpoint in the official format (dict with state_dict/best_nme/optimizer/epoch, official
    key names, a DataParallel prefix) loads strictly into our network."""
    src = build_network({**PAPER, "stacks": 1, "num_landmarks": 68})
    keys = list(src.state_dict())
    assert "pre_conv.0.conv.weight" in keys and "hg0.res4_1.skip_layer.bn.running_var" in keys
    assert "offset_head.down_ops.0.downsample.0.conv.weight" in keys and "offset_head.head.1.bias" in keys
    ck = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "best_nme": 4.08,
          "optimizer": {}, "epoch": 60}
    torch.save(ck, tmp_path / "WFLW.pth")
    dst = build_network({**PAPER, "stacks": 1, "num_landmarks": 68})
    load_into(dst, official_state_dict(load_checkpoint(tmp_path / "WFLW.pth")), "WFLW.pth")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_both_decimal_heads_give_what_they_read_and_only_the_roi_head_reads_a_few_points_again():
    """forward keeps the map the head read ("features"): the global head's is the network's own map, the
    ROI head's its reduced one, which decimal_at reads again for a few points, as the first read did."""
    small = dict(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2, roi_channels=8, head_channels=16)
    x = torch.randn(2, 3, 64, 64)
    for head, channels in (("global", 32), ("roi", 8)):
        net = build_network({**small, "decimal_head": head}).eval()
        with torch.no_grad():
            out = net(x)
        assert out["features"].shape == (2, channels, 16, 16) and out["decimal"].shape == (2, 68, 8, 8)
        points = torch.tensor([[3, 40], [0, 67]])
        cells = out["peak_cells"].gather(1, points[..., None].expand(-1, -1, 2))
        if head == "global":
            with pytest.raises(ValueError, match="decimal_head: roi"):
                net.decimal_at(out, cells, points)
            continue
        with torch.no_grad():
            again = net.decimal_at(out, cells, points)
        first = out["decimal"].gather(1, points[..., None, None].expand(-1, -1, 8, 8))
        assert torch.allclose(again, first, atol=1e-5)


def test_wrong_architecture_is_a_clear_error():
    small = build_network(dict(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2))
    other = build_network(dict(num_landmarks=98, input_px=64, stacks=1, channels=32, depth=2))
    with pytest.raises(WeightsError, match="does not match this architecture"):
        load_into(small, other.state_dict(), "other.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Evil()}, p)
    with pytest.raises(WeightsError, match="refused"):
        load_checkpoint(p)


def test_truncated_and_missing_files(tmp_path):
    net = build_network(dict(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2))
    p = tmp_path / "w.pt"
    save_checkpoint({"state_dict": net.state_dict()}, p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_checkpoint(p)
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(WeightsError):
        load_checkpoint(tmp_path / "text.pt")
    assert pickle  # the module is used by the Evil test's protocol


def test_save_load_round_trip(tmp_path):
    net = build_network(dict(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2))
    save_checkpoint({"state_dict": net.state_dict(), "recipe": {"a": 1}}, tmp_path / "w.pt")
    ck = load_checkpoint(tmp_path / "w.pt")
    for k, v in net.state_dict().items():
        assert torch.equal(v, ck["state_dict"][k])


@pytest.mark.parametrize("head,peak_cell", [("roi", "argmax"), ("roi", "centroid"), ("global", "argmax")])
def test_onnx_matches_pytorch(tmp_path, head, peak_cell):
    """The whole inference graph (uint8 crops -> normalisation -> network -> HIH decode, the
    calibrated decode included) gives the same points on onnxruntime as on torch."""
    from models.codec import HIHCodec
    from models.network import NetworkConfig
    from models.onnx_cache import OnnxGraph
    from models.torch_runner import DeployGraph
    torch.manual_seed(0)
    cfg = NetworkConfig(num_landmarks=68, input_px=64, stacks=2, channels=32, depth=2, decimal_head=head, peak_cell=peak_cell)
    net = build_network(cfg).eval()
    # non-trivial BN statistics so the comparison means something
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    codec = HIHCodec(input_px=64, heatmap_px=cfg.heatmap_px, decimal_px=cfg.decimal_px,
                     window_cells=2.0, decimal_decode="calibrated")
    graph = DeployGraph(net, codec).eval()
    with torch.no_grad():
        export_onnx(graph, tmp_path / "m.onnx", torch.zeros(1, 64, 64, 3, dtype=torch.uint8), ["points"], {"input_px": 64})
    crops = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        ref = graph(crops).numpy()
    onnx = OnnxGraph.load(tmp_path / "m.onnx", threads=1)
    assert onnx.facts == {"input_px": 64}
    out = onnx(crops.numpy())
    assert out.shape == (3, 68, 3) and np.abs(out - ref).max() < 1e-3


def test_points_at_a_decimal_window_edge_are_read_again_at_the_neighbouring_cell(tmp_path):
    """HIHCodec.edge_reread: the points of a face nearest their window's edge (EDGE_POINTS of them)
    that lie within edge_reread of it take the decimal map read at the neighbouring cell on that side,
    as a full second read of every point at those cells would give; the rest keep their first read.
    The same on onnxruntime."""
    from models.codec import HIHCodec, heatmap_to_crop
    from models.network import NetworkConfig
    from models.onnx_cache import OnnxGraph
    from models.torch_runner import EDGE_POINTS, DeployGraph
    torch.manual_seed(0)
    cfg = NetworkConfig(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2, decimal_head="roi")
    net = build_network(cfg).eval()
    torch.nn.init.normal_(net.roi_head.fc2.weight, std=3.0)            # decimal maps with peaks: fractions spread
    codec = HIHCodec(input_px=64, heatmap_px=cfg.heatmap_px, decimal_px=cfg.decimal_px, window_cells=2.0,
                     decimal_decode="calibrated", edge_reread=0.45)    # wide: many points count as at the edge
    graph = DeployGraph(net, codec).eval()
    crops = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    x = ((crops.permute(0, 3, 1, 2).flip(1).float() - graph.mean) / graph.std)
    with torch.no_grad():
        got = graph(crops)[..., :2]
        out = net(x)
        frac = codec.decimal_fraction(out["decimal"])
        step = codec.edge_step(frac)
        moved_to = (out["peak_cells"] + step).clamp(0, cfg.heatmap_px - 1)
        every = torch.arange(68).expand(2, 68)
        again = codec.decimal_fraction(net.decimal_at(out, moved_to, every))          # every point read again
        nearest = codec.edge_margin(frac).topk(EDGE_POINTS, dim=1, largest=False).indices
    chosen = torch.zeros(2, 68, dtype=torch.bool).scatter(1, nearest, True) & (step != 0).any(-1)
    assert 0 < int(chosen.sum()) <= 2 * EDGE_POINTS
    expected = torch.where(chosen[..., None], moved_to.float() + again, out["peak_cells"].float() + frac)
    assert torch.allclose(got, heatmap_to_crop(expected, codec.stride), atol=1e-4)
    plain = DeployGraph(net, HIHCodec(input_px=64, heatmap_px=cfg.heatmap_px, decimal_px=cfg.decimal_px, window_cells=2.0,
                                      decimal_decode="calibrated", edge_reread=0.0)).eval()
    with torch.no_grad():
        first = plain(crops)[..., :2]
    assert torch.allclose(first, heatmap_to_crop(out["peak_cells"].float() + frac, codec.stride), atol=1e-4)
    with torch.no_grad():
        export_onnx(graph, tmp_path / "m.onnx", torch.zeros(1, 64, 64, 3, dtype=torch.uint8), ["points"], {"input_px": 64})
    onnx = OnnxGraph.load(tmp_path / "m.onnx", threads=1)
    assert np.abs(onnx(crops.numpy())[..., :2] - got.numpy()).max() < 1e-3


def test_centroid_peak_cell_follows_the_mass_of_a_lopsided_peak():
    """A symmetric peak: the cell of the maximum. A peak whose maximum is one cell but whose mass lies
    mostly on the cells to its left (as at the crop edge): the cell nearest the centre of mass."""
    from models.network import PEAK_CELLS
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    symmetric = torch.exp(-((xs - 9) ** 2 + (ys - 5) ** 2) / 4)
    lopsided = torch.zeros(16, 16)                      # its maximum at x = 9, its mass around x = 8
    lopsided[5, 7:11] = torch.tensor([0.9, 0.95, 1.0, 0.1])
    lopsided[4, 7:10] = lopsided[6, 7:10] = torch.tensor([0.8, 0.85, 0.3])
    maps = torch.stack([symmetric, lopsided])[None]     # (1,2,16,16)
    assert PEAK_CELLS["argmax"](maps)[0].tolist() == [[9, 5], [9, 5]]
    assert PEAK_CELLS["centroid"](maps)[0].tolist() == [[9, 5], [8, 5]]
    # on any maps, peaks at the border included: the rounded centre of mass of the decode's centroid
    from models.codec import refine_centroid
    noisy = torch.rand(3, 68, 16, 16) - 0.3
    noisy[0, :, 0, 0] = noisy[1, :, 15, 7] = 5.0
    assert torch.equal(PEAK_CELLS["centroid"](noisy), torch.round(refine_centroid(noisy, 2)).long())


def test_the_shipped_graphs_belong_to_the_shipped_weights():
    """Every shipped weights file has its ONNX graph beside it, named by its hash: after the weights
    change, `hihtrack export --shipped` makes them anew (or this fails)."""
    from models.engine import SHIPPED_WEIGHTS
    from models.eyes import WEIGHTS
    from models.onnx_cache import SHIPPED_DIR
    for weights, variant in [*((w, "points-default") for w in SHIPPED_WEIGHTS.values()), (WEIGHTS, "eyes")]:
        name = f"{weights.stem}-{file_sha256(weights)[:16]}-{variant}.onnx"
        assert (SHIPPED_DIR / name).is_file(), f"{name} is missing: run `hihtrack export --shipped`"
    assert len(list(SHIPPED_DIR.glob("*.onnx"))) == len(SHIPPED_WEIGHTS) + 1      # and nothing stale


def test_onnxruntime_backend_matches_torch_engine():
    from models.engine import LandmarkEngine
    from stream.demo import DemoSource
    src = DemoSource(frames=1)
    img = src.render(0)
    c, s = src.true_boxes(0)[0]
    a = LandmarkEngine(device="cpu")
    b = LandmarkEngine(device="cpu", backend="onnxruntime")
    m = a.crop_matrices(c[None], np.array([s]))
    pa, ca = a.landmarks(img, m)
    pb, cb = b.landmarks(img, m)
    assert np.median(np.abs(pa - pb)) < 0.01 and np.abs(ca - cb).max() < 1e-3


def test_shipped_network_moves_smoothly_as_the_crop_slides():
    """The trained network on a crop sliding by an eighth of its width (4 heatmap cells at 128 px) in
    0.2-cell steps (0.75 image px here), from 9 start boxes (3 sizes x 3 offsets across the slide): the
    landmarks move monotonically (a network is not exactly equivariant: a rare step back is tolerated),
    and the largest step is at most 2x the mean step for most landmarks (no jump when the integer peak
    changes cell). The weights shipped before the continuous decode failed this: on one slide 1 of 68
    landmarks within 2x, the worst step 3.8x the mean, a step back of 2.6x the mean."""
    import skimage.data

    from models.evaluate import slides_smooth, sliding_crop
    traces = sliding_crop(None, np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1]))
    assert len(traces) == 9 and slides_smooth(traces), traces


def test_crop_views_average_away_crop_position_spread():
    """Two crop views (half a heatmap cell apart, one mirrored), averaged, keep the landmarks where
    one view puts them (the average is no bias) and move them less as the crop box slides over a
    +-2 px grid (the issue-12 crop spread: 0.70 -> 0.49 % of the eye distance on 4 faces)."""
    import skimage.data

    from models.detector import FaceBox, build_detector
    from models.landmarkers import build_landmarker, settle
    img = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    one, two = build_landmarker("hih", backend="torch", views=1), build_landmarker("hih", backend="torch", views=2)
    box = settle(one, img, one(img, build_detector("blazeface")(img)[:1]))[0].box
    grid = [FaceBox(box.center_px + [dx, dy], box.side_px) for dx in np.linspace(-2, 2, 7) for dy in np.linspace(-2, 2, 7)]
    pts_one = np.stack([r.landmarks_px for r in one(img, grid)])
    pts_two = np.stack([r.landmarks_px for r in two(img, grid)])
    spread = lambda p: np.sqrt(((p - p.mean(0)) ** 2).sum(-1).mean())  # noqa: E731
    assert spread(pts_two) < 0.85 * spread(pts_one), (spread(pts_two), spread(pts_one))
    assert np.abs(pts_two.mean(0) - pts_one.mean(0)).mean() < 0.5     # px: the same landmarks on average
    with pytest.raises(ValueError, match="views must be one of"):
        build_landmarker("hih", views=3)


def test_device_crops_give_the_host_crops_landmarks():
    """The GPU crop path (grid_sample on the device, here run on the CPU) and OpenCV's host crops give
    the same landmarks for several frames' faces in one batch."""
    from models.engine import LandmarkEngine
    from stream.demo import DemoSource
    src = DemoSource(frames=2, faces=2)
    eng = LandmarkEngine(device="cpu")
    items = []
    for k in range(2):
        centers, sides = zip(*src.true_boxes(k))
        items.append((src.render(k), eng.crop_matrices(np.stack(centers), np.array(sides))))
    host, device = eng.landmarks_many(items, device_crops=False), eng.landmarks_many(items, device_crops=True)
    for (ph, ch), (pd, cd) in zip(host, device):
        assert ph.shape == (2, 68, 2) and np.median(np.abs(ph - pd)) < 0.05 and np.abs(ch - cd).max() < 0.02
    assert eng.landmarks_many([(items[0][0], np.zeros((0, 2, 3)))])[0][0].shape == (0, 68, 2)


def _random_bn(net):
    """Non-trivial BN statistics and scales, so channel choices and copies mean something."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(-1, 1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_slim_at_the_same_width_is_the_same_network():
    from models.network import NetworkConfig, slim
    torch.manual_seed(0)
    cfg = NetworkConfig(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2)
    net = _random_bn(build_network(cfg))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x), slim(net, cfg).eval()(x)
    assert torch.allclose(a["heatmaps"], b["heatmaps"]) and torch.allclose(a["decimal"], b["decimal"])


def test_slim_keeps_the_strongest_bottleneck_channels():
    """Narrower 3x3 paths, everything else copied; a channel whose BN scale is zero carries nothing, so
    dropping exactly those channels leaves the output unchanged."""
    from dataclasses import replace

    from models.network import NetworkConfig, Residual, slim
    torch.manual_seed(0)
    cfg = NetworkConfig(num_landmarks=68, input_px=64, stacks=1, channels=32, depth=2)
    net = _random_bn(build_network(cfg))
    for m in net.modules():
        if isinstance(m, Residual):        # silence the upper half of each bottleneck (conv1 and conv2 outputs)
            for bn in (m.conv1.bn, m.conv2.bn):
                half = bn.num_features // 2
                bn.weight.data[half:] = 0
                bn.bias.data[half:] = 0
    narrow = replace(cfg, bottleneck=0.25)
    small = slim(net, narrow).eval()
    assert small.hg0.res1_1.conv2.conv.weight.shape == (8, 8, 3, 3)      # 32 x 0.25, from 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x), small(x)
    assert torch.allclose(a["heatmaps"], b["heatmaps"], atol=1e-5)
    assert count_params(small) < count_params(net)
