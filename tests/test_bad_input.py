"""Every bad input ends with one line: exit code non-zero, exactly one `error:` line on stderr, no
traceback, within a time limit. Table-driven across flags, configs, files, URLs, weights,
recordings, replay, export, train, eval, bench and extract; plus a property test that generates
configs from the settings schema with wrong types, unknown keys and out-of-range values."""
import dataclasses
import os
import struct
import subprocess
import sys
import typing
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.schema import SettingsError, UserError
from stream.settings import TrackSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 120
pytestmark = pytest.mark.reliability


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixels are missing): a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad (and a few good) files the cases refer to as {name}."""
    import cv2
    d = tmp_path_factory.mktemp("bad")
    f = {"tmp": d}

    def put(name, data):
        p = d / name
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data)
        f[name.replace(".", "_")] = p
    put("empty.mp4", b"")
    put("text.mp4", "this is not a video\n" * 50)
    put("damaged.jpg", b"\xff\xd8\xff\xe0" + os.urandom(500))
    put("huge.png", png_header(30000, 30000))
    put("garbage.pt", os.urandom(2000))
    put("text.pt", "weights\n")
    import torch
    torch.save({"epoch": 1}, d / "no_state.pt")          # a real checkpoint file without weights in it
    f["no_state_pt"] = d / "no_state.pt"
    put("missing_keys.yaml", "landmarker: hih\nsmoothing: kalman\n")        # a good, partial config (layered)
    put("binary.yaml", os.urandom(300) + b"\x00\xff")
    put("invalid.yaml", "source: [unclosed\n")
    put("list.yaml", "- a\n- b\n")
    for name, text in {"detect_every_top.yaml": "detect_every: ten\n", "detect_every.yaml": "tracking:\n  detect_every: ten\n",
                       "kalman_str.yaml": "kalman: strong\n", "threads.yaml": "threads: many\n",
                       "tracking_key.yaml": "tracking:\n  speed: 3\n", "one_euro_key.yaml": "one_euro:\n  betaa: 1\n",
                       "overwrite_str.yaml": 'overwrite: "false"\n', "kalman_neg.yaml": "kalman:\n  process_noise: -1\n",
                       "port0.yaml": "gradio:\n  port: 0\n", "smoothing_null.yaml": "smoothing: null\n",
                       "threads_big.yaml": "threads: 1000\n", "record_list.yaml": "record: [a, b]\n",
                       "recipe_typo.yaml": "optim:\n  lrr: 0.1\n"}.items():
        put(name, text)
    put("existing.csv", "precious\n")
    put("a_file", "x")
    (d / "no_images").mkdir()
    f["no_images"] = d / "no_images"
    (d / "all_refused").mkdir()                  # every image in it is damaged: nothing was tracked
    for name in ("a.jpg", "b.png"):
        (d / "all_refused" / name).write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(400))
    f["all_refused"] = d / "all_refused"
    put("truncated.csv", "frame,timestamp,face_id\n0,0.0,")
    put("truncated.npz", b"PK\x03\x04" + os.urandom(100))
    rec = d / "good.csv"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "--source", "demo", "--ui", "none", "--max-frames", "3",
                        "--record", str(rec)], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert r.returncode == 0, r.stderr
    f["good_csv"] = rec
    img = np.full((64, 64, 3), 90, np.uint8)
    cv2.imwrite(str(d / "small.png"), img)
    f["small_png"] = d / "small.png"
    return f


# (id, argv with {placeholders}, words the one error line must contain)
CASES = [
    # ---- track flags
    ("threads-negative", ["--threads", "-1"], ["--threads", "range"]),
    ("threads-1000", ["--threads", "1000"], ["--threads", "range"]),
    ("threads-word", ["--threads", "many"], ["--threads"]),
    ("port-too-big", ["--ui", "gradio", "--port", "70000"], ["--port", "range"]),
    ("port-negative", ["--ui", "gradio", "--port", "-5"], ["--port", "range"]),
    ("demo-abc", ["--source", "demo:abc"], ["demo"]),
    ("demo-zero", ["--source", "demo:0"], ["demo"]),
    ("demo-too-many", ["--source", "demo:500"], ["demo"]),
    ("camera-huge-index", ["--source", "99999999999999999999"], ["camera index"]),
    ("camera-missing", ["--source", "7"], ["camera 7"]),
    ("source-missing", ["--source", "/nope/clip.mp4"], ["not found"]),
    ("url-scheme", ["--source", "ftp://example.com/x"], ["unsupported URL"]),
    ("ui-unknown", ["--ui", "fancy"], ["ui", "fancy"]),
    ("ui-opencv-headless", ["--ui", "opencv"], ["no display"]),
    ("landmarker-unknown", ["--landmarker", "dlib"], ["landmarker"]),
    ("smoothing-unknown", ["--smoothing", "strong"], ["smoothing"]),
    ("device-unknown", ["--device", "gpu"], ["device"]),
    ("precision-unknown", ["--precision", "fp8"], ["precision"]),
    ("backend-unknown", ["--backend", "tensorrt"], ["backend"]),
    ("detector-unknown", ["--detector", "yolo"], ["detector"]),
    ("max-frames-negative", ["--max-frames", "-3"], ["--max-frames"]),
    ("demo-frames-zero", ["--demo-frames", "0"], ["--demo-frames"]),
    ("folder-mode-unknown", ["--folder-mode", "photos"], ["folder-mode"]),
    ("record-unknown-format", ["--source", "demo", "--record", "{tmp}/x.xyz"], ["format"]),
    ("record-unwritable", ["--source", "demo", "--record", "/proc/nope/x.csv"], ["cannot write"]),
    ("record-under-a-file", ["--source", "demo", "--record", "{a_file}/x.csv"], ["cannot write"]),
    ("record-exists", ["--source", "demo", "--record", "{existing_csv}"], ["already exists"]),
    ("record-format-unknown", ["--source", "demo", "--record", "{tmp}/y.csv", "--record-format", "parquet"], ["record-format"]),
    ("record-video-ext", ["--source", "demo", "--record-video", "{tmp}/x.xyz"], ["container"]),
    ("record-video-unwritable", ["--source", "demo", "--record-video", "/proc/nope/x.mp4"], ["cannot write"]),
    ("send-scheme", ["--source", "demo", "--send", "ftp://127.0.0.1:1"], ["cannot send"]),
    ("weights-missing", ["--source", "demo", "--weights", "/nope/w.pt"], ["not found"]),
    ("weights-garbage", ["--source", "demo", "--weights", "{garbage_pt}"], ["weights"]),
    ("weights-text", ["--source", "demo", "--weights", "{text_pt}"], ["weights"]),
    ("weights-folder", ["--source", "demo", "--weights", "{tmp}"], ["is a folder"]),
    # ---- configs
    ("config-missing", ["--config", "/nope.yaml"], ["config file"]),
    ("config-binary", ["--config", "{binary_yaml}"], ["config file"]),
    ("config-invalid", ["--config", "{invalid_yaml}"], ["not valid YAML"]),
    ("config-list", ["--config", "{list_yaml}"], ["mapping"]),
    ("config-key-misplaced", ["--config", "{detect_every_top_yaml}"], ["detect_every", "tracking"]),
    ("config-int-word", ["--config", "{detect_every_yaml}"], ["tracking.detect_every", "whole number"]),
    ("config-section-str", ["--config", "{kalman_str_yaml}"], ["kalman", "mapping"]),
    ("config-threads-word", ["--config", "{threads_yaml}"], ["threads"]),
    ("config-unknown-key", ["--config", "{tracking_key_yaml}"], ["tracking.speed"]),
    ("config-typo", ["--config", "{one_euro_key_yaml}"], ["did you mean 'beta'"]),
    ("config-quoted-bool", ["--config", "{overwrite_str_yaml}"], ["overwrite", "true or false"]),
    ("config-negative-noise", ["--config", "{kalman_neg_yaml}"], ["kalman.process_noise", "range"]),
    ("config-port-zero", ["--config", "{port0_yaml}"], ["gradio.port"]),
    ("config-null-choice", ["--config", "{smoothing_null_yaml}"], ["smoothing"]),
    ("config-threads-1000", ["--config", "{threads_big_yaml}"], ["threads", "range"]),
    ("config-record-list", ["--config", "{record_list_yaml}"], ["record"]),
    # ---- media
    ("video-empty", ["--source", "{empty_mp4}"], ["empty"]),
    ("video-text", ["--source", "{text_mp4}"], ["cannot open"]),
    ("image-damaged", ["--source", "{damaged_jpg}"], ["cannot read image"]),
    ("image-bomb-header", ["--source", "{huge_png}"], ["too large", "megapixel"]),
    ("folder-no-images", ["--source", "{no_images}"], ["no images"]),
    ("folder-all-refused", ["--source", "{all_refused}"], ["none of the 2 image"]),
    ("send-unresolvable-host", ["--source", "demo", "--send", "udp://no-such-host.invalid:9000"], ["cannot open"]),
    ("url-refused", ["--source", "http://127.0.0.1:9/clip.mp4"], ["cannot open"]),
    ("rtsp-refused", ["--source", "rtsp://127.0.0.1:9/live"], ["cannot open"]),
    # ---- replay
    ("replay-missing", ["replay", "/nope/rec.csv"], ["cannot load recording"]),
    ("replay-truncated-csv", ["replay", "{truncated_csv}", "--ui", "none"], ["cannot load recording"]),
    ("replay-truncated-npz", ["replay", "{truncated_npz}", "--ui", "none"], ["cannot load recording"]),
    ("replay-video-missing", ["replay", "{good_csv}", "--video", "/nope/v.mp4", "--ui", "none"], ["not found"]),
    ("replay-ui-gradio", ["replay", "{good_csv}", "--ui", "gradio"], ["--ui"]),
    ("replay-ui-opencv-headless", ["replay", "{good_csv}", "--ui", "opencv"], ["no display"]),
    # ---- export
    ("export-weights-missing", ["export", "--weights", "/nope/w.pt"], ["not found"]),
    ("export-out-unwritable", ["export", "--out", "/proc/nope/x.onnx"], ["cannot write"]),
    # ---- train
    ("train-set-typo", ["train", "--set", "optim.lrr=1"], ["optim.lrr", "did you mean 'lr'"]),
    ("train-set-type", ["train", "--set", "optim.lr=abc"], ["optim.lr", "number"]),
    ("train-set-form", ["train", "--set", "lr"], ["SECTION.KEY=VALUE"]),
    ("train-config-typo", ["train", "--config", "{recipe_typo_yaml}"], ["optim.lrr"]),
    ("train-config-missing", ["train", "--config", "/nope.yaml"], ["config file"]),
    ("train-resume-garbage", ["train", "--resume", "{garbage_pt}"], ["weights"]),
    ("train-data-missing", ["train", "--data", "/nope/300w"], ["/nope/300w"]),
    ("train-threads", ["train", "--threads", "-1"], ["--threads"]),
    # ---- eval, bench, fit-shape
    ("eval-decodes", ["eval", "--decodes", "bogus"], ["--decodes", "bogus"]),
    ("eval-competitors", ["eval", "--competitors", "foo"], ["--competitors", "foo"]),
    ("eval-limit-negative", ["eval", "--limit", "-1"], ["--limit"]),
    ("eval-data-missing", ["eval", "--data", "/nope/300w", "--competitors", ""], ["/nope/300w"]),
    ("bench-faces-zero", ["bench", "jitter", "--faces", "0"], ["--faces"]),
    ("bench-unknown", ["bench", "everything"], ["everything"]),
    ("bench-quantization-data", ["bench", "quantization", "--data", "/nope"], ["/nope"]),
    ("fit-shape-data", ["fit-shape", "--data", "/nope/300w"], ["/nope/300w"]),
    ("average-one", ["average", "{garbage_pt}", "--out", "{tmp}/mean.pt"], ["at least two"]),
    ("average-no-weights", ["average", "{no_state_pt}", "{no_state_pt}", "--out", "{tmp}/mean.pt"], ["no state_dict"]),
    ("average-garbage", ["average", "{garbage_pt}", "{garbage_pt}", "--out", "{tmp}/mean.pt"], ["weights", "garbage"]),
    # ---- extract
    ("extract-out-unwritable", ["extract", "{small_png}", "--out", "/proc/nope"], ["--out"]),
    ("extract-glob-empty", ["extract", "{tmp}/nothing*.mp4", "--out", "{tmp}/out"], ["matches no file"]),
    ("extract-no-out", ["extract", "{small_png}"], ["--out"]),
    ("extract-workers", ["extract", "{small_png}", "--out", "{tmp}/o2", "--workers", "-2"], ["--workers"]),
]


@dataclasses.dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(files, capfd, monkeypatch):
    """The command line in this process (`hihtrack.cli.main(argv)`): what it prints to either stream, its
    exit status, and any exception that escapes it (a traceback fails the test); pytest-timeout bounds it.
    A few cases run as real subprocesses in test_cli.py."""
    from hihtrack.cli import main
    monkeypatch.chdir(files["tmp"])
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)

    def run(argv) -> Ran:
        argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
        if argv[0] not in ("replay", "export", "train", "eval", "bench", "fit-shape", "extract", "synth-poses",
                           "train-eyes", "average"):
            argv = ["track", "--ui", "none", *argv] if "--ui" not in argv else ["track", *argv]
        capfd.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:          # argparse's own exits (its errors are one line too)
            code = e.code
        out, err = capfd.readouterr()
        return Ran(code, out, err)
    return run


def assert_one_line(r, words):
    assert r.returncode not in (0, None), (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, run_cli):
    _, argv, words = case
    assert_one_line(run_cli(argv), words)


def test_the_table_is_large():
    assert len(CASES) >= 60


def test_existing_recording_survives(files):
    assert files["existing_csv"].read_text() == "precious\n"


def test_a_partial_config_layers_on_the_defaults(files):
    s = load_settings(files["missing_keys_yaml"])
    assert s.smoothing == "kalman" and s.tracking.detect_every == 10 and s.gradio.port == 7860


def test_an_oversized_image_in_a_folder_is_skipped_and_named(files, tmp_path, run_cli):
    import shutil
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(files["huge_png"], folder / "a_huge.png")
    import cv2
    import skimage.data
    cv2.imwrite(str(folder / "b_astronaut.png"), skimage.data.astronaut()[:, :, ::-1])
    r = run_cli(["--source", str(folder), "--folder-mode", "stills"])
    assert r.returncode == 0, r.stderr
    assert "skipped a_huge.png" in r.stderr and "megapixel" in r.stderr


# ---- property test: configs generated from the schema ---------------------------------------------
def _leaf_fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], f.metadata.get("range")


LEAVES = list(_leaf_fields(TrackSettings))


def _wrong_value(hint):
    """Values of a type the field does not take."""
    if hint is bool:
        return st.sampled_from(["false", "yes", 0, 1, 2.5, None, [True]])
    if hint is int:
        return st.one_of(st.text(min_size=1, max_size=5), st.booleans(), st.lists(st.integers(), max_size=2), st.floats(0.1, 0.9))
    if hint is float:
        return st.one_of(st.text(min_size=1, max_size=5), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.sampled_from([float("nan"), float("inf")]))
    return st.sampled_from([{"a": 1}, 3.5])     # text, choices, lists: neither a mapping nor a float fits


@st.composite
def bad_configs(draw):
    name, hint, rng = draw(st.sampled_from(LEAVES))
    kind = draw(st.sampled_from(["type", "unknown", "range"] if rng else ["type", "unknown"]))
    *parents, leaf = name.split(".")
    if kind == "unknown":
        leaf = leaf + draw(st.sampled_from(["_x", "s", "2"]))
        value = 1
    elif kind == "range":
        lo, hi = rng
        value = draw(st.sampled_from([v for v in ((lo - 1) if lo is not None else None, (hi * 2 + 1) if hi is not None else None)
                                      if v is not None]))
        if hint is int:
            value = int(value)
    else:
        value = draw(_wrong_value(hint))
    config: dict = {}
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return name, kind, config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_configs())
def test_generated_bad_configs_get_a_clean_error(case):
    name, kind, config = case
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, UserError)
    assert name.split(".")[-1].split("[")[0] in msg or "unknown setting" in msg, (config, msg)


def test_replay_keeps_a_recording_cut_mid_row_and_a_shorter_video(files, tmp_path, run_cli):
    """A recorder killed mid-row leaves a last line cut short: replay keeps every complete row. A video
    shorter than the recording: the rest is drawn on a blank canvas, said once."""
    import shutil

    from stream.demo import DemoSource
    from tests.test_pipeline import write_video
    cut = tmp_path / "cut.csv"
    text = files["good_csv"].read_text()
    cut.write_text(text[: len(text) - 40])
    shutil.copy(str(files["good_csv"]) + ".meta.json", str(cut) + ".meta.json")
    short = tmp_path / "short.mp4"
    demo = DemoSource(frames=1)
    write_video(short, [demo.render(0)])
    r = run_cli(["replay", str(cut), "--video", str(short), "--ui", "none"])
    assert r.returncode == 0, r.stderr
    assert "replayed 2 frames" in r.stdout and "blank canvas" in r.stderr


def test_sigterm_ends_like_ctrl_c_and_keeps_the_recording(files, tmp_path):
    """A service manager's stop: the summary is printed and the NPZ holds the frames up to the end."""
    import signal
    import time

    from stream.recorders import load_recording
    out = tmp_path / "t.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--source", "demo", "--realtime", "--ui", "none",
                             "--record", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not out.exists():
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr and "recorded" in stdout, (stdout, stderr)
    rows = int(stdout.split("recorded ")[1].split()[0])
    assert rows > 30 and len(load_recording(out)["frame"]) == rows
