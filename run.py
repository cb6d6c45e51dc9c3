#!/usr/bin/env python3
"""hihtrack: real-time face landmarks with Heatmap-In-Heatmap.

    python run.py [track] [--source 0|FILE|FOLDER|URL|demo] [--ui opencv|gradio|none] ...
    python run.py train --config configs/hih_small.yaml --data ../shared/data/300w
    python run.py eval  --weights models/weights/hih_small_300w.pt --data ../shared/data/300w
    python run.py bench quantization|speed
    python run.py export --weights W --out model.onnx

The CLI only wires the rooms together; heavy modules are imported by the subcommand that needs
them, so `train` and `bench speed` also run where only torch + numpy (+ cv2) are installed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")      # no V4L probing noise on machines without cameras
os.environ.setdefault("GLOG_minloglevel", "2")          # mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent
SUBCOMMANDS = ("track", "train", "eval", "bench", "export", "replay", "fit-shape")


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def _load_yaml(path: str | Path) -> dict:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise CliError(f"config file {path} not found; pass --config with an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CliError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix or remove it") from None
    if not isinstance(data, dict):
        raise CliError(f"config file {path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


TRACK_CHOICES = {"ui": ("auto", "opencv", "gradio", "webrtc", "none"), "landmarker": ("hih", "mediapipe"),
                 "smoothing": ("shape", "kalman", "one_euro", "none"), "detector": ("blazeface", "haar"),
                 "precision": ("fp32", "fp16", "bf16"), "backend": ("torch", "onnxruntime")}


def track_settings(args: argparse.Namespace) -> dict:
    """configs/pipeline.yaml (or --config), then every flag that was given."""
    cfg = _load_yaml(args.config or ROOT / "configs/pipeline.yaml")
    for key, value in vars(args).items():
        if key not in ("config", "func", "command") and value is not None:
            cfg[key] = value
    for key, allowed in TRACK_CHOICES.items():
        if cfg.get(key) not in allowed:
            raise CliError(f"{key} {cfg.get(key)!r} is not one of {', '.join(allowed)}")
    dev = str(cfg.get("device", "auto"))
    if not (dev in ("auto", "cpu") or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise CliError(f"device {dev!r} is not one of auto, cpu, cuda, cuda:N")
    if int(cfg.get("max_frames") or 0) < 0:
        raise CliError("--max-frames must be 0 (no limit) or positive")
    return cfg


def build_tracker_parts(cfg: dict):
    """Detector, landmarker and tracker from settings; clear errors for missing pieces."""
    from models.detector import build_detector
    from models.landmarkers import build_landmarker
    from models.weights import WeightsError
    from stream.tracking import Tracker, TrackingConfig

    try:
        extra = {"backend": cfg.get("backend", "torch")} if cfg["landmarker"] == "hih" else {}
        landmarker = build_landmarker(cfg["landmarker"], weights=cfg.get("weights"), device=str(cfg.get("device", "auto")),
                                      precision=cfg.get("precision", "fp32"), threads=int(cfg.get("threads") or 0), **extra)
    except WeightsError as e:
        raise CliError(str(e)) from None
    kwargs = {"min_score": cfg.get("detector_min_score", 0.5)} if cfg.get("detector") == "blazeface" else {}
    detector = build_detector(cfg.get("detector", "blazeface"), **kwargs)
    return landmarker, Tracker(detector, TrackingConfig(**cfg.get("tracking", {})))


def cmd_track(args: argparse.Namespace) -> int:
    from stream.pipeline import Pipeline, PipelineConfig
    from stream.sources import SourceError, default_source, open_source

    cfg = track_settings(args)
    if cfg["ui"] in ("gradio", "webrtc"):
        return _serve_web(cfg)
    ui = None
    if cfg["ui"] == "auto":
        from ui.opencv_window import DisplayError, check_display
        try:
            check_display()
            cfg["ui"] = "opencv"
        except DisplayError:
            cfg["ui"] = "none"
            print("no display: running without a window (--ui none); progress is printed here", file=sys.stderr)
    if cfg["ui"] == "opencv":
        from ui.opencv_window import DisplayError, OpenCVWindow
        try:
            ui = OpenCVWindow()
        except DisplayError as e:
            raise CliError(str(e)) from None
    source_spec = str(cfg.get("source", "auto"))
    if source_spec == "auto":
        source_spec, notice = default_source()
        if notice:
            print(notice, file=sys.stderr)
    try:
        source = open_source(source_spec, realtime=bool(cfg.get("realtime")), demo_frames=int(cfg.get("demo_frames", 300)),
                             folder_mode=str(cfg.get("folder_mode", "auto")))
    except SourceError as e:
        raise CliError(str(e)) from None
    landmarker, tracker = build_tracker_parts(cfg)
    recorder = _open_recorder(cfg, landmarker, source) if cfg.get("record") else None
    sinks = _open_sinks(cfg, source)
    smoothing = cfg.get("smoothing", "shape")
    pcfg = PipelineConfig(smoothing=smoothing, smoothing_settings=cfg.get(smoothing, {}) or {})
    session = _Session(ui, recorder, sinks, smoothing, int(cfg.get("max_frames") or 0))
    print(f"tracking {source.description} with {cfg['landmarker']} landmarks, {smoothing} smoothing", file=sys.stderr)
    error, summaries = None, []
    try:
        while True:
            pipe = Pipeline(source, tracker, landmarker, pcfg).start()
            try:
                session.consume(pipe)
                break
            except SourceError as e:
                if not (cfg.get("reconnect") and source.live):
                    error = str(e)
                    break
                source = _reopen(source_spec, str(e))
            finally:
                pipe.stop()
                summaries.append(pipe.stats.summary())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    except CliError as e:
        error = str(e)
    finally:
        for sink in [recorder, *sinks]:
            if sink is not None:
                sink.close()
        if ui is not None:
            ui.close()
        landmarker.close()
    if summaries:
        _print_summary(summaries[-1], recorder)
    if error:
        raise CliError(error + (" (recording saved)" if recorder else ""))
    return 0


def _serve_web(cfg: dict) -> int:
    """--ui gradio (or webrtc): the web app on 127.0.0.1 (or --host), --port, optional --share link."""
    import socket

    web = cfg.setdefault("gradio", {}) or {}
    host, port = str(cfg.get("host") or web.get("host", "127.0.0.1")), int(cfg.get("port") or web.get("port", 7860))
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise CliError(f"port {port} on {host} is already in use; pass --port with a free one") from None
    if cfg["ui"] == "webrtc":
        try:
            from ui.webrtc_app import build_webrtc_app as build_app
        except ImportError:
            raise CliError("--ui webrtc needs the fastrtc package, which pins gradio<6: install it in its own "
                           "environment (see ui/webrtc_app.py), or use --ui gradio") from None
    else:
        from ui.gradio_app import build_app

    app = build_app(cfg)
    print(f"hihtrack web app on http://{host}:{port}", file=sys.stderr)
    app.queue(default_concurrency_limit=None).launch(server_name=host, server_port=port, share=bool(cfg.get("share")),
                                                     show_error=True)
    return 0


class _Session:
    """The consumer side of `track`: draw or print progress, record, react to keys."""

    def __init__(self, ui, recorder, sinks: list, smoothing: str, max_frames: int):
        self.ui, self.recorder, self.sinks, self.smoothing, self.max_frames = ui, recorder, sinks, smoothing, max_frames
        self.recording = recorder is not None
        self.frames = 0
        self._last_print = 0.0

    def consume(self, pipe) -> None:
        from ui.draw import stats_lines

        for frame in pipe.results():
            self.frames += 1
            if self.recording:
                self.recorder.write(frame)
            for sink in self.sinks:
                sink.write(frame)
            lines = stats_lines(frame, pipe.stats.fps(), pipe.stats.dropped,
                                self.smoothing if pipe.smoothing_enabled else "off", self.recording)
            if self.ui is not None:
                action = self.ui.show(frame, lines)
                if action == "quit":
                    return
                if action == "toggle_smoothing":
                    pipe.smoothing_enabled = not pipe.smoothing_enabled
                elif action == "toggle_recording" and self.recorder is not None:
                    self.recording = not self.recording
                elif action == "toggle_drawing":
                    self.ui.draw = not self.ui.draw
                elif action == "calibrate":
                    pipe.calibrate_requested = True
                elif action == "toggle_glasses":
                    self.ui.opts.glasses = not self.ui.opts.glasses
            elif time.perf_counter() - self._last_print > 1.0:
                self._last_print = time.perf_counter()
                print("\r" + " | ".join(lines[:2]) + "   ", end="", file=sys.stderr, flush=True)
            if self.max_frames and self.frames >= self.max_frames:
                return


def _reopen(spec: str, why: str, attempts: int = 10, wait_s: float = 2.0):
    """--reconnect: reopen a camera or stream that stopped, a few times, then give up."""
    from stream.sources import SourceError, open_source

    print(f"\n{why}; reconnecting", file=sys.stderr)
    for _ in range(attempts):
        time.sleep(wait_s)
        try:
            return open_source(spec)
        except SourceError:
            continue
    raise CliError(f"{why}; gave up after {attempts} reconnect attempts")


def _open_sinks(cfg: dict, source) -> list:
    """--record-video and --send outputs."""
    from stream.senders import SendError, build_sender

    sinks = []
    try:
        for url in cfg.get("send") or []:
            sinks.append(build_sender(url))
    except SendError as e:
        for s in sinks:
            s.close()
        raise CliError(str(e)) from None
    if cfg.get("record_video"):
        from stream.video_writer import AnnotatedVideoSink, VideoWriter
        from ui.draw import DrawOptions, draw_frame
        try:
            audio = str(cfg.get("source")) if not source.live else None    # a file's audio is passed through
            writer = VideoWriter(cfg["record_video"], source.fps or 30.0, bool(cfg.get("overwrite")), audio_from=audio)
        except (FileExistsError, OSError) as e:
            raise CliError(str(e)) from None
        sinks.append(AnnotatedVideoSink(writer, lambda frame: draw_frame(frame, DrawOptions(), None)))
    return sinks


def _open_recorder(cfg: dict, landmarker, source):
    from models.weights import file_sha256
    from stream.recorders import Recorder, RecordError, RecordMeta

    wp = getattr(landmarker, "weights_path", None)
    meta = RecordMeta(landmarker.scheme, landmarker.num_points, cfg["landmarker"], file_sha256(wp) if wp else None,
                      source.description, source.fps, None, {"mode": cfg.get("smoothing"), **(cfg.get(cfg.get("smoothing"), {}) or {})})
    try:
        return Recorder(cfg["record"], meta, cfg.get("record_format"), bool(cfg.get("overwrite")))
    except RecordError as e:
        raise CliError(str(e)) from None


def _print_summary(s: dict, recorder) -> None:
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in s["stage_p50_ms"].items())
    print(f"\n{s['frames_out']} frames, {s['fps']:.1f} FPS, latency p50 {s['latency_p50_ms']:.1f} ms / "
          f"p95 {s['latency_p95_ms']:.1f} ms, dropped {s['dropped']}; per-stage p50: {stages}")
    if recorder is not None:
        lost = f", {recorder.lost_rows} rows lost to a full queue" if recorder.lost_rows else ""
        print(f"recorded {recorder.rows} rows to {recorder.path}{lost}")


def cmd_replay(args: argparse.Namespace) -> int:
    """Play a recording back over its video (or a blank canvas), in a window or as a summary."""
    import numpy as np

    from models.detector import FaceBox
    from stream.frames import Face, Frame
    from stream.recorders import load_recording
    from stream.sources import SourceError, open_source

    try:
        rec = load_recording(args.file)
    except (OSError, ValueError, KeyError) as e:
        raise CliError(f"cannot load recording {args.file} ({e.__class__.__name__}: {e}); pass a .csv, .jsonl or .npz "
                       "written by `track --record` (with its .meta.json)") from None
    ui = None
    if args.ui == "opencv":
        from ui.opencv_window import DisplayError, OpenCVWindow
        try:
            ui = OpenCVWindow()
        except DisplayError as e:
            raise CliError(str(e)) from None
    frames = None
    if args.video:
        try:
            frames = open_source(args.video).frames()
        except SourceError as e:
            raise CliError(str(e)) from None
    lm = rec["landmarks"]
    w = int(np.nanmax(lm[..., 0])) + 40 if np.isfinite(lm).any() else 640
    h = int(np.nanmax(lm[..., 1])) + 40 if np.isfinite(lm).any() else 480
    shown = 0
    for i, idx in enumerate(rec["frame"]):
        image = next(frames)[0] if frames is not None else np.full((h, w, 3), 40, np.uint8)
        faces = [Face(int(tid), FaceBox.from_landmarks(lm[i, j]), lm[i, j], np.ones(len(lm[i, j]), np.float32), "replay",
                      smoothed_px=rec["smoothed"][i, j])
                 for j, tid in enumerate(rec["face_id"][i]) if tid >= 0 and np.isfinite(lm[i, j]).all()]
        frame = Frame(int(idx), float(rec["timestamp"][i]), image, faces=faces)
        shown += 1
        if ui is not None and ui.show(frame, [f"replay {args.file} frame {idx}"]) == "quit":
            break
    if ui is not None:
        ui.close()
    n_faces = int((rec["face_id"] >= 0).sum())
    print(f"replayed {shown} frames, {n_faces} face observations, {rec['landmarks'].shape[2]} points per face")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models.engine import LandmarkEngine
    from models.weights import WeightsError, export_onnx

    try:
        eng = LandmarkEngine(args.weights, "cpu")
    except WeightsError as e:
        raise CliError(str(e)) from None
    export_onnx(eng.net, Path(args.out), eng.input_px)
    print(f"wrote {args.out}: input 'image' (N,3,{eng.input_px},{eng.input_px}) ImageNet-normalised RGB; "
          "outputs 'heatmap' (last integer heatmap) and 'decimal' (decimal logits)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from models.data import DataError
    from models.train import Recipe, train
    from models.weights import WeightsError

    settings = _load_yaml(args.config)
    for item in args.set or []:  # e.g. --set optim.lr=0.002
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        settings.setdefault(section, {})[name] = yaml.safe_load(value)
    try:
        recipe = Recipe.from_dict(settings)
    except TypeError as e:
        raise CliError(f"bad recipe setting in {args.config} or --set ({e}); see configs/hih_small.yaml for the keys") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        state = train(recipe, args.data, Path(args.out), args.device, Path(args.resume) if args.resume else None,
                      Path(args.cache) if args.cache else None, init=Path(args.init) if args.init else None)
    except (DataError, WeightsError) as e:
        raise CliError(str(e)) from None
    print(f"done: {state['epoch']} epochs, {state['step']} steps, {state['elapsed_s'] / 60:.1f} min, "
          f"best val NME {state['best_nme']:.2f}; weights in {args.out}/best.pt")
    return 0


def cmd_fit_shape(args: argparse.Namespace) -> int:
    import numpy as np

    from models.data import DataError, load_faces
    from models.shape import fit_shape_model
    try:
        faces = load_faces(args.data, "train")
    except DataError as e:
        raise CliError(str(e)) from None
    model = fit_shape_model(np.stack([f.landmarks_px for f in faces]).astype(np.float64), args.components)
    model.save(Path(args.out))
    share = model.sd ** 2 / (model.sd ** 2).sum()
    print(f"wrote {args.out}: {len(faces)} training shapes, {len(model.sd)} components "
          f"(the first 8 / 20 hold {share[:8].sum():.0%} / {share[:20].sum():.0%} of the kept variance)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.data import DataError, load_faces
    from models.evaluate import PROTOCOLS, evaluate, write_report
    from models.weights import WeightsError

    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    try:
        faces = load_faces(args.data, "test")
        if args.limit:
            faces = faces[: args.limit]
        for protocol in protocols:
            res = evaluate(faces, args.weights, args.competitors.split(",") if args.competitors else [],
                           tuple(args.decodes.split(",")), args.device, args.dlib_python, protocol)
            title = f"{args.title or f'{Path(args.data).name} ({len(faces)} faces)'}, {protocol} protocol"
            print(write_report(res, Path(args.out), title), flush=True)
    except (DataError, WeightsError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.what == "quantization":
        from bench.quantization import study, write
        data = Path(args.data) if args.data else ROOT.parent / "shared/data"
        sets = {name: data / name for name in ("300w", "wflw") if (data / name).exists()}
        if not sets:
            raise CliError(f"no annotated sets (300w/, wflw/) under {data}; pass --data ../shared/data")
        print(write(study(sets), out))
    elif args.what == "accuracy":   # the eval command with its defaults: ours vs MediaPipe and PFLD, both test sets
        data = Path(args.data) if args.data else ROOT.parent / "shared/data"
        for name, title in (("300w", "300-W common (554 faces)"), ("wflw", "WFLW-206 hard faces, 98-to-68")):
            if (data / name).exists():
                cmd_eval(build_parser().parse_args(["eval", "--data", str(data / name), "--title", title, "--out", str(out)]))
    elif args.what == "jitter":
        from bench.jitter import run_jitter
        cfg = _load_yaml(ROOT / "configs/pipeline.yaml")
        print(run_jitter(out, args.faces, Path(args.data) / "300w" if args.data else None,
                         defaults={m: cfg.get(m, {}) for m in ("kalman", "one_euro", "shape")},
                         weights=Path(args.weights) if args.weights else None,
                         log=lambda m: print(m, file=sys.stderr, flush=True)))
    elif args.what == "pipeline":
        from bench.pipeline import run_pipeline_bench
        print(run_pipeline_bench(out, args.minutes))
    elif args.what == "speed":
        from bench.speed import run_speed
        print(run_speed(args.device, out, quick=args.quick))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command")

    tr = sub.add_parser("track", help="track faces live (the default)")
    tr.add_argument("--source", help="camera index, video file, image folder, URL, demo or demo:N (default: webcam, else demo)")
    tr.add_argument("--ui", help="auto | opencv | gradio | webrtc | none (auto: a window when there is a display)")
    tr.add_argument("--host", help="gradio: interface to bind (default 127.0.0.1)")
    tr.add_argument("--port", type=int, help="gradio: port (default 7860)")
    tr.add_argument("--share", action="store_true", default=None, help="gradio: also make a public share link")
    tr.add_argument("--landmarker", help="hih | mediapipe")
    tr.add_argument("--weights", help="HIH weights (default: the shipped models/weights/hih_small_300w.pt)")
    tr.add_argument("--device", help="auto | cpu | cuda[:i]")
    tr.add_argument("--precision", help="fp32 | fp16 | bf16")
    tr.add_argument("--backend", help="CPU inference: torch | onnxruntime")
    tr.add_argument("--threads", type=int)
    tr.add_argument("--smoothing", help="shape | kalman | one_euro | none")
    tr.add_argument("--detector", help="blazeface | haar")
    tr.add_argument("--record", help="write landmarks to PATH (.csv, .jsonl or .npz)")
    tr.add_argument("--record-video", dest="record_video", help="write the annotated video to PATH.mp4 (PyAV)")
    tr.add_argument("--send", action="append", help="osc://host:port (VMC), udp://host:port or ws://host:port; repeatable")
    tr.add_argument("--record-format", dest="record_format", help="csv | jsonl | npz (default: from the extension)")
    tr.add_argument("--overwrite", action="store_true", default=None, help="replace an existing recording")
    tr.add_argument("--max-frames", dest="max_frames", type=int, help="stop after N frames")
    tr.add_argument("--realtime", action="store_true", default=None, help="pace a file at its own frame rate")
    tr.add_argument("--reconnect", action="store_true", default=None, help="reopen a camera that stops")
    tr.add_argument("--demo-frames", dest="demo_frames", type=int)
    tr.add_argument("--folder-mode", dest="folder_mode",
                    help="an image folder is: auto (decide from sizes and content) | stills (unrelated photos) | video (frames)")
    tr.add_argument("--config", help="pipeline YAML (default configs/pipeline.yaml); flags win over it")
    tr.set_defaults(func=cmd_track)

    ex = sub.add_parser("export", help="export the inference graph to ONNX")
    ex.add_argument("--weights", default=str(ROOT / "models/weights/hih_small_300w.pt"))
    ex.add_argument("--out", default="hih_small.onnx")
    ex.set_defaults(func=cmd_export)

    rp = sub.add_parser("replay", help="play a recording back over its video or a blank canvas")
    rp.add_argument("file")
    rp.add_argument("--video", help="the source the recording was made from")
    rp.add_argument("--ui", default="opencv", choices=("opencv", "none"))
    rp.set_defaults(func=cmd_replay)

    ev = sub.add_parser("eval", help="NME / FR / AUC / CED on held-out annotated faces, with competitors")
    ev.add_argument("--weights", default=str(ROOT / "models/weights/hih_small_300w.pt"))
    ev.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"),
                    help="300-W root (test = helen_testset + lfpw_testset), a .pts folder, or a WFLW folder/list")
    ev.add_argument("--competitors", default="mediapipe,pfld", help="comma list: mediapipe, pfld, dlib ('' for none)")
    ev.add_argument("--dlib-python", dest="dlib_python", help="python of the benchmark env that has dlib (bench/dlib_landmarks.py)")
    ev.add_argument("--decodes", default="hih,dark,centroid,argmax", help="decodes of our network to report")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--protocol", default="both", choices=("both", "detector", "gt-box"),
                    help="detector: the project's detector + refinement (what a user gets); gt-box: ground-truth squares")
    ev.add_argument("--limit", type=int, default=0)
    ev.add_argument("--title")
    ev.add_argument("--out", default=str(ROOT / "bench/results"))
    ev.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmarks: quantization | speed | jitter | pipeline | accuracy "
                                                "(tables, JSON and plots in bench/results)")
    b.add_argument("what", choices=("quantization", "speed", "jitter", "pipeline", "accuracy"))
    b.add_argument("--minutes", type=float, default=5.0, help="pipeline: length of the real-time paced run")
    b.add_argument("--faces", type=int, default=4, help="jitter: real test faces to animate")
    b.add_argument("--data", help="folder holding 300w/ and wflw/ (default ../shared/data)")
    b.add_argument("--device", default="cpu", help="speed: cpu | cuda")
    b.add_argument("--quick", action="store_true", help="speed: fewer repetitions")
    b.add_argument("--weights", help="jitter: HIH weights to measure (default: the shipped ones)")
    b.add_argument("--out", default=str(ROOT / "bench/results"))
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("train", help="train an HIH model")
    t.add_argument("--config", default=str(ROOT / "configs/hih_small.yaml"))
    t.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"))
    t.add_argument("--cache", help="pre-cropped face cache folder (built by models.data.build_cache)")
    t.add_argument("--out", default="runs/train")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", help="checkpoint (last.pt) to continue from")
    t.add_argument("--init", help="start from these weights (e.g. the shipped ones) with a fresh optimizer: fine-tuning")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--set", action="append", help="override a recipe value, e.g. optim.lr=0.002")
    t.set_defaults(func=cmd_train)

    fs = sub.add_parser("fit-shape", help="fit the shape model the 'shape' stabilizer uses (aligned PCA of training shapes)")
    fs.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"))
    fs.add_argument("--components", type=int, default=40)
    fs.add_argument("--out", default=str(ROOT / "models/weights/shape_300w.npz"))
    fs.set_defaults(func=cmd_fit_shape)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv.insert(0, "track")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
