"""hihtrack's command line (`hihtrack ...` once installed, or `python run.py ...` in a checkout).

    python run.py [track] [--source 0|FILE|FOLDER|URL|demo] [--ui opencv|gradio|none] ...
    python run.py extract VIDEOS... --out DIR [--workers N | --batch-videos N | --ray auto]
    python run.py train --config configs/hih_small.yaml --data ../shared/data/300w
    python run.py eval  --data ../shared/data/300w
    python run.py bench quantization|speed
    python run.py export --weights W --out model.onnx

The CLI only wires the rooms together; heavy modules are imported by the subcommand that needs
them, so `train` and `bench speed` also run where only torch + numpy (+ cv2) are installed.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
import typing
from pathlib import Path

from models.schema import UserError, WeightsError, check_value, field_default

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")      # no V4L probing noise on machines without cameras
os.environ.setdefault("GLOG_minloglevel", "2")          # mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]     # the checkout (or site-packages): configs/, models/weights/, bench/
SUBCOMMANDS = ("track", "extract", "train", "eval", "bench", "export", "replay", "fit-shape", "synth-poses", "train-eyes",
               "average", "config")


class CliError(UserError):
    """A user-facing problem found by the CLI itself: printed as one line, exit status 2."""


# --weights of the commands outside `track` (whose flag is the setting's): the names live in models.engine
WEIGHTS_HELP = "HIH weights: a shipped name (models/weights/MODEL_CARD.md) or a file; none: the default"
# `hihtrack track`'s flags: every top-level setting (stream/settings.py) by its own name, and these from
# the web page's section by a short one
SECTION_FLAGS = {"host": "gradio.host", "port": "gradio.port", "share": "gradio.share"}
# the track flags extract takes too
EXTRACT_SETTINGS = ("landmarker", "weights", "device", "backend", "crop_views", "detector", "smoothing")


def track_flags() -> dict[str, tuple[str, dataclasses.Field, object]]:
    """flag dest -> (setting's dotted name, its field, its type), generated from TrackSettings."""
    from stream.settings import TrackSettings, WebSettings
    out = {}
    for cls, prefix in ((TrackSettings, ""), (WebSettings, "gradio.")):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            dotted = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]) or (prefix and dotted not in SECTION_FLAGS.values()):
                continue
            dest = next((k for k, v in SECTION_FLAGS.items() if v == dotted), f.name)
            out[dest] = (dotted, f, hints[f.name])
    return out


def _flag(dest: str) -> str:
    return f"--{dest.replace('_', '-')}"


def _described(f: dataclasses.Field, hint, sep: str) -> str:
    """A setting's help, with its choices (a Literal's values, joined by `sep`) when the help does not list them."""
    choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
    text = f.metadata.get("help", "")
    return text + (f" ({sep.join(map(str, choices))})" if choices and "|" not in text else "")


def _add_setting_flag(parser: argparse.ArgumentParser, dest: str, f: dataclasses.Field, hint) -> None:
    """One flag for one setting: its help and default come from the field, its value is checked by
    the settings schema (so a flag and a config key get the same one-line errors)."""
    args = typing.get_args(hint)
    kwargs: dict = {"dest": dest, "help": f"{_described(f, hint, ' | ')} (default: {field_default(f)})"}
    if hint is bool:
        kwargs.update(action="store_true", default=None)
    elif typing.get_origin(hint) is list:
        kwargs.update(action="append", metavar="VALUE")
    elif hint is int or (typing.get_origin(hint) is typing.Literal and all(isinstance(a, int) for a in args)):
        kwargs.update(type=_whole_number)
    elif hint is float:
        kwargs.update(type=float)
    parser.add_argument(_flag(dest), **kwargs)


def flags_markdown() -> str:
    """The README's table of track flags, generated from the settings (a test keeps the README's copy equal)."""
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for dest, (_, f, hint) in track_flags().items():
        default = field_default(f)
        shown = "off" if default is False else "—" if default in (None, []) else f"`{default}`"
        rows.append(f"| `{_flag(dest)}` | {shown} | {_described(f, hint, ' · ').replace('|', '·')} |")
    return "\n".join(rows) + "\n"


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def track_settings(args: argparse.Namespace):
    """The fields' defaults, then --config, then every setting flag that was given (track's, or the
    ones extract takes): checked once, each flag's value by its own name."""
    from stream.settings import TrackSettings, load_settings
    flags = track_flags()
    given = {dest: v for dest, v in vars(args).items() if dest in flags and v is not None}
    for dest, value in given.items():
        check_value(TrackSettings, flags[dest][0], value, _flag(dest))
    return load_settings(args.config, **{flags[dest][0]: v for dest, v in given.items()})


def cmd_track(args: argparse.Namespace) -> int:
    from hihtrack import FaceTracker

    settings = track_settings(args)
    if settings.ui == "gradio":
        return _serve_web(settings)
    window = _open_window(settings.ui)
    with FaceTracker(settings) as tracker:
        if tracker.auto_choices:
            from stream.settings import describe_choices
            _notice(describe_choices(tracker.auto_choices))
        source = tracker.open_source(notify=_notice)
        outputs = tracker.outputs(source)
        recorder = next((o for o in outputs if hasattr(o, "lost_rows")), None)
        print(f"tracking {source.description} with {settings.landmarker} landmarks, {settings.smoothing} smoothing",
              file=sys.stderr)
        if window is not None:
            from ui.opencv_window import WindowSession
            on_frame = WindowSession(window, tracker, recorder)
        else:
            on_frame = _Progress(tracker)
        try:
            summary = tracker.run(source, outputs, on_frame, notify=_notice)
        finally:
            if window is not None:
                window.close()
    if summary.interrupted:
        print("\ninterrupted", file=sys.stderr)
    _print_summary(summary, recorder)
    for skipped in getattr(source, "skipped", []):
        print(f"skipped {skipped}", file=sys.stderr)
    if summary.error:
        raise CliError(summary.error + (" (recording saved)" if recorder else ""))
    return 0


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _open_window(ui: str):
    """The OpenCV window for --ui opencv (and auto, where there is a display), else None."""
    from ui.opencv_window import DisplayError, OpenCVWindow, check_display
    if ui == "auto":
        try:
            check_display()
        except DisplayError:
            print("no display: running without a window (--ui none); progress is printed here", file=sys.stderr)
            return None
    return OpenCVWindow() if ui in ("auto", "opencv") else None


class _Progress:
    """--ui none: one status line a second."""

    def __init__(self, tracker):
        self.tracker, self._last = tracker, 0.0

    def __call__(self, frame) -> None:
        from stream.draw import stats_lines
        if time.perf_counter() - self._last > 1.0:
            self._last = time.perf_counter()
            stats = self.tracker.stats
            lines = stats_lines(frame, stats.fps, stats.dropped, self.tracker.settings.smoothing, False)
            print("\r" + " | ".join(lines[:2]) + "   ", end="", file=sys.stderr, flush=True)


def _serve_web(settings) -> int:
    """--ui gradio: the web app on gradio.host (--host), gradio.port (--port), optional --share link."""
    import socket

    web = settings.gradio
    with socket.socket() as sock:
        try:
            sock.bind((web.host, web.port))
        except OSError as e:
            raise CliError(f"cannot listen on {web.host}:{web.port} ({e.strerror}); pass --port with a free one "
                           "or --host with an address of this machine") from None
    from ui.gradio_app import serve
    print(f"hihtrack web app on http://{web.host}:{web.port}", file=sys.stderr)
    serve(settings)
    return 0


def _print_summary(s, recorder) -> None:
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in s.stage_p50_ms.items())
    print(f"\n{s.frames} frames ({s.frames_with_face} with a face), {s.fps:.1f} FPS, latency p50 {s.latency_p50_ms:.1f} ms / "
          f"p95 {s.latency_p95_ms:.1f} ms, dropped {s.dropped}; per-stage p50: {stages}")
    if recorder is not None:
        lost = f", {recorder.lost_rows} rows lost to a full queue" if recorder.lost_rows else ""
        print(f"recorded {recorder.rows} rows to {recorder.path}{lost}")


def cmd_extract(args: argparse.Namespace) -> int:
    """One recording per input; finished ones skipped; a results table; exit 1 if any input failed."""
    from hihtrack.extract import extract_all

    progress = _ExtractProgress(args.format, args.out, per_file=bool(args.ray))
    try:
        report = extract_all(args.inputs, args.out, track_settings(args), fmt=args.format,
                         workers=args.workers, batch_videos=args.batch_videos, ray=args.ray, on_plan=progress.plan,
                         on_frames=progress.frames, on_result=progress.result, notify=_notice)
    finally:
        progress.close()
    _print_extract_table(report)
    return 1 if report.failed else 0


class _ExtractProgress:
    """extract's progress bar (tqdm on stderr): frames as they are done, files as they finish."""

    def __init__(self, fmt: str, out: str, per_file: bool):
        self.fmt, self.out, self.per_file = fmt, out, per_file    # per_file: Ray workers report whole inputs
        self.bar, self.todo, self.finished = None, 0, 0

    def plan(self, jobs, todo) -> None:
        from tqdm import tqdm

        from hihtrack.extract import frame_estimate
        print(f"{len(jobs)} inputs, {len(jobs) - len(todo)} already done; writing {self.fmt} to {self.out}", file=sys.stderr)
        self.todo = len(todo)
        self.bar = tqdm(total=sum(frame_estimate(j.input) for j in todo) or None, unit="frame", desc=f"0/{self.todo} files",
                        file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def frames(self, n: int) -> None:
        self.bar.update(n)

    def result(self, r):
        self.finished += 1
        self.bar.set_description(f"{self.finished}/{self.todo} files")
        if r.error:
            self.bar.write(f"failed: {r.input}: {r.error}", file=sys.stderr)
        elif self.per_file:
            self.bar.update(r.frames)
        return r

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_extract_table(report) -> None:
    done = {r.input: r for r in report.results}
    print(f"{'input':40s} {'frames':>7s} {'w/ face':>7s} {'fps':>6s}  result")
    for job in report.jobs:
        r = done.get(job.input)
        if r is None:
            print(f"{job.input[-40:]:40s} {'':>7s} {'':>7s} {'':>6s}  skipped: {job.output} already done")
        elif r.error:
            print(f"{job.input[-40:]:40s} {'':>7s} {'':>7s} {'':>6s}  error: {r.error}")
        else:
            print(f"{job.input[-40:]:40s} {r.frames:7d} {r.frames_with_face:7d} {r.fps:6.1f}  {r.output}")
    print(f"{len(report.results) - len(report.failed)} extracted, {len(report.skipped)} skipped, {len(report.failed)} failed; "
          f"{report.frames} frames in {report.wall_s:.1f} s = {report.frames / max(report.wall_s, 1e-9):.1f} frames/s overall")


def cmd_replay(args: argparse.Namespace) -> int:
    """Play a recording back over its video (or a blank canvas), in a window or as a summary."""
    from stream.recorders import load_recording, recorded_frames
    from stream.sources import open_source

    rec = load_recording(args.file)
    video = open_source(args.video).frames() if args.video else None
    window = _open_window(args.ui)
    shown = 0
    for frame in recorded_frames(rec, video, notify=_notice):
        shown += 1
        if window is not None and window.show(frame, [f"replay {args.file} frame {frame.index}"]) == "quit":
            break
    if window is not None:
        window.close()
    n_faces = int((rec["face_id"] >= 0).sum())
    print(f"replayed {shown} frames, {n_faces} face observations, {rec['landmarks'].shape[2]} points per face")
    return 0


def _export_shipped() -> int:
    """The ONNX graphs that ship beside the shipped weights (models/weights/onnx) and the encoded demo
    clip (stream/media), made anew."""
    from models.engine import SHIPPED_WEIGHTS, OnnxRunner
    from models.eyes import EyeLocator
    from models.onnx_cache import SHIPPED_DIR
    from stream.demo import write_shipped_clip
    for old in SHIPPED_DIR.glob("*.onnx"):
        old.unlink()
    paths = [OnnxRunner.graph_path(w, folder=SHIPPED_DIR) for w in SHIPPED_WEIGHTS.values()]
    paths.append(EyeLocator.graph_path(folder=SHIPPED_DIR))
    paths.append(write_shipped_clip())
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    """One checkpoint, the mean of several of one run (how the shipped weights were made)."""
    from models.weights import average_checkpoints, save_checkpoint
    out = Path(args.out)
    if out.resolve() in {Path(p).resolve() for p in args.checkpoints}:
        raise CliError(f"--out {out} is one of the checkpoints to average; write the mean to a new file")
    save_checkpoint(average_checkpoints(args.checkpoints), out)
    print(f"wrote {out}: the mean of {len(args.checkpoints)} checkpoints")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Every setting with its default and help, as YAML (configs/pipeline.yaml is this output)."""
    from stream.settings import defaults_yaml
    print(defaults_yaml(), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models.engine import weights_path
    from models.torch_runner import export_graph

    if args.shipped:
        return _export_shipped()
    try:
        export_graph(weights_path(args.weights), Path(args.out))
    except WeightsError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write {args.out} ({e.strerror or e.__class__.__name__}); choose a writable --out") from None
    print(f"wrote {args.out}: input 'crops' (N,S,S,3) uint8 BGR face crops; output 'points' (N,K,3): x, y in "
          "crop px and confidence; the crop size and margin are in the model's metadata ('hihtrack')")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from models.schema import deep_merge, dotted, read_yaml
    from models.train import Recipe, augmentation_sheet, train, training_set

    overrides = {}
    for item in args.set or []:  # e.g. --set optim.lr=0.002
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise CliError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. --set optim.lr=0.002")
        overrides[key] = yaml.safe_load(value)
    recipe = Recipe.from_dict(deep_merge(read_yaml(args.config), dotted(overrides)))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preview:
        tr, _, _, weights = training_set(recipe, args.data, Path(args.cache) if args.cache else None)
        augmentation_sheet(recipe, tr, weights, Path(args.preview))
        print(f"wrote {args.preview}: training inputs as the network gets them, with their landmarks; no training run")
        return 0
    state = train(recipe, args.data, Path(args.out), args.device, Path(args.resume) if args.resume else None,
                  Path(args.cache) if args.cache else None, init=Path(args.init) if args.init else None)
    done = f"done: {state['epoch']} epochs, {state['step']} steps, {state['elapsed_s'] / 60:.1f} min, "
    if math.isinf(state["best_nme"]):
        print(done + f"no checkpoint held the real-face guardrail (optim.real_val_tolerance); the final weights are in {args.out}/last.pt")
    else:
        print(done + f"best val NME {state['best_nme']:.2f}; weights in {args.out}/best.pt")
    return 0


def cmd_fit_shape(args: argparse.Namespace) -> int:
    import numpy as np

    from models.data import load_faces
    from models.shape import fit_shape_model
    faces = load_faces(args.data, "train")
    model = fit_shape_model(np.stack([f.landmarks_px for f in faces]).astype(np.float64), args.components)
    model.save(Path(args.out))
    share = model.sd ** 2 / (model.sd ** 2).sum()
    print(f"wrote {args.out}: {len(faces)} training shapes, {len(model.sd)} components "
          f"(the first 8 / 20 hold {share[:8].sum():.0%} / {share[:20].sum():.0%} of the kept variance)")
    return 0


def cmd_synth_poses(args: argparse.Namespace) -> int:
    from models.data import CacheSpec, load_faces
    from models.profiling import contact_sheet, synthesize

    out = Path(args.out)
    faces = load_faces(args.data, "train")[:args.limit or None]
    counts = synthesize(faces, out, CacheSpec(args.side_px, args.box_scale), seed=args.seed)
    contact_sheet(out, out / "contact_sheet.png")
    print(f"wrote {counts['views']} synthetic views of {counts['source_faces'] - counts['skipped_faces']} faces "
          f"({counts['skipped_faces']} skipped: no mesh, a mesh that disagrees with the annotation, or turned past "
          f"the fit's limit) to {out}; look at {out / 'contact_sheet.png'} before training")
    return 0


def cmd_train_eyes(args: argparse.Namespace) -> int:
    import json

    import torch

    from models.eye_net import EyeTrainConfig, train_eye_net, training_data
    from models.weights import save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    synth = Path(args.synth).expanduser()
    if not (synth / "meta.json").is_file():
        raise CliError(f"no synthetic cache at {synth}; make one with `run.py synth-poses --out {synth}`")
    train, val = training_data(args.data, synth)
    print(f"eye network training: {len(train[0])} faces, validation: {len(val[0])} faces (annotated eye outlines, "
          "MediaPipe iris pseudo-labels)")
    cfg = EyeTrainConfig(**{k: v for k in ("width", "steps") if (v := getattr(args, k)) is not None})
    net, report = train_eye_net(*train, val, cfg)
    out = Path(args.out)
    save_checkpoint({"state_dict": net.state_dict(), "config": cfg.__dict__, **report}, out)
    Path(str(out) + ".log.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.data import load_faces
    from models.engine import VIEWS
    from models.evaluate import COMPETITORS, PROTOCOLS, evaluate, write_report
    from models.train import DECODES
    from stream.expressions import ExpressionEstimator

    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    decodes = _choices("--decodes", args.decodes, DECODES)
    competitors = _choices("--competitors", args.competitors, COMPETITORS)
    views = [int(v) for v in _choices("--views", args.views, [str(k) for k in VIEWS])]
    faces = load_faces(args.data, "test")
    if args.limit:
        faces = faces[: args.limit]
    for protocol in protocols:
        res = evaluate(faces, args.weights, competitors, decodes, args.device, args.dlib_python, protocol,
                       views=views, log=_notice, shapes=lambda pts68: ExpressionEstimator().blendshapes(pts68))
        title = f"{args.title or f'{Path(args.data).name} ({len(faces)} faces)'}, {protocol} protocol"
        print(write_report(res, Path(args.out), title), flush=True)
    return 0


def _choices(flag: str, value: str, allowed) -> list[str]:
    """A comma list whose items must all be allowed ('' = none)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if value else []
    bad = [v for v in items if v not in allowed]
    if bad:
        raise CliError(f"{flag}: {', '.join(bad)} unknown; choose from {', '.join(allowed)}")
    return items


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.what == "quantization":
        from bench.quantization import study, write
        data = Path(args.data) if args.data else ROOT.parent / "shared/data"
        sets = {name: data / name for name in ("300w", "wflw") if (data / name).exists()}
        if not sets:
            raise CliError(f"no annotated sets (300w/, wflw/) under {data}; pass --data ../shared/data")
        print(write(study(sets, log=_notice), out))
    elif args.what == "accuracy":   # the eval command with its defaults: ours vs MediaPipe and PFLD, both test sets
        data = Path(args.data) if args.data else ROOT.parent / "shared/data"
        for name, title in (("300w", "300-W common (554 faces)"), ("wflw", "WFLW-206 hard faces, 98-to-68")):
            if (data / name).exists():
                cmd_eval(build_parser().parse_args(["eval", "--data", str(data / name), "--title", title, "--out", str(out)]))
    elif args.what == "jitter":
        from dataclasses import asdict

        from bench.jitter import run_jitter
        from stream.settings import load_settings
        settings = load_settings()
        print(run_jitter(out, args.faces, Path(args.data) / "300w" if args.data else None,
                         defaults={m: asdict(getattr(settings, m)) for m in ("kalman", "one_euro", "shape")},
                         weights=Path(args.weights) if args.weights else None,
                         log=lambda m: print(m, file=sys.stderr, flush=True)))
    elif args.what == "pipeline":
        from bench.pipeline import run_pipeline_bench
        print(run_pipeline_bench(out, args.minutes))
    elif args.what == "extract":
        from bench.extract import run_extract_bench
        print(run_extract_bench(out, args.clips, args.frames, log=lambda m: print(m, file=sys.stderr, flush=True)))
    elif args.what == "web":
        from bench.web import run_web_bench, run_web_soak
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        print(run_web_bench(out, args.seconds, log=log))
        if args.soak_minutes:
            print(run_web_soak(out, args.soak_minutes, log=log))
    elif args.what == "avatar":
        from bench.avatar import run_avatar_bench
        print(run_avatar_bench(out, args.seconds))
    elif args.what == "startup":
        from bench.startup import run_startup_bench
        print(run_startup_bench(out))
    elif args.what == "models":
        from bench.models import run_models_bench
        from models.engine import weights_path
        print(run_models_bench(Path(args.data) if args.data else ROOT.parent / "shared/data", out, log=_notice,
                               candidates=(weights_path(args.weights),) if args.weights else ()))
    elif args.what == "speed":
        from bench.speed import run_speed
        print(run_speed(args.device, out, quick=args.quick))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) like every other error."""

    def error(self, message: str):
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def _bounded(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range {lo}..{hi}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hihtrack", description="hihtrack: real-time face landmarks with Heatmap-In-Heatmap")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    tr = sub.add_parser("track", help="track faces live (the default)")
    for dest, (_, f, hint) in track_flags().items():
        _add_setting_flag(tr, dest, f, hint)
    tr.add_argument("--config", help="a YAML file of the settings you change (all of them: `hihtrack config`); "
                    "flags win over it")
    tr.set_defaults(func=cmd_track)

    xt = sub.add_parser("extract", help="landmarks for many videos: one recording per input, resumable, parallel or on Ray")
    xt.add_argument("inputs", nargs="+", help="video files, folders, globs (quoted) or list files (.txt: one input per line)")
    xt.add_argument("--out", required=True, help="folder for the recordings (named after the inputs)")
    xt.add_argument("--format", default="csv", choices=("csv", "jsonl", "npz"))
    xt.add_argument("--workers", type=_bounded(0, 64), default=0, help="worker processes (0: one per core)")
    xt.add_argument("--batch-videos", dest="batch_videos", type=_bounded(-1, 1024), default=-1,
                    help="track N inputs at once in one process, their faces batched through one network "
                         "(-1: 32 on a GPU, off on a CPU; 0: off)")
    xt.add_argument("--ray", help="run on a Ray cluster: auto (the running one), ADDRESS, or local (start one here)")
    flags = track_flags()
    for dest in EXTRACT_SETTINGS:
        _add_setting_flag(xt, dest, *flags[dest][1:])
    xt.add_argument("--config", help="a YAML file of the settings you change (as for track)")
    xt.set_defaults(func=cmd_extract)

    ex = sub.add_parser("export", help="export the inference graph to ONNX")
    ex.add_argument("--weights", help=WEIGHTS_HELP)
    ex.add_argument("--out", default="hih_small.onnx")
    ex.add_argument("--shipped", action="store_true", help="(re)make the graphs shipped beside the shipped weights "
                    "(models/weights/onnx) and the encoded demo clip (stream/media), after either changes")
    ex.set_defaults(func=cmd_export)

    cf = sub.add_parser("config", help="print every setting with its default and help: a YAML to copy the keys you change from")
    cf.set_defaults(func=cmd_config)

    rp = sub.add_parser("replay", help="play a recording back over its video or a blank canvas")
    rp.add_argument("file")
    rp.add_argument("--video", help="the source the recording was made from")
    rp.add_argument("--ui", default="auto", choices=("auto", "opencv", "none"),
                    help="auto: a window where there is a display, else only the summary")
    rp.set_defaults(func=cmd_replay)

    ev = sub.add_parser("eval", help="NME / FR / AUC / CED on held-out annotated faces, with competitors")
    ev.add_argument("--weights", help=WEIGHTS_HELP)
    ev.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"),
                    help="300-W root (test = helen_testset + lfpw_testset), a .pts folder, or a WFLW folder/list")
    ev.add_argument("--competitors", default="mediapipe,pfld", help="comma list: mediapipe, pfld, dlib ('' for none)")
    ev.add_argument("--dlib-python", dest="dlib_python", help="python of the benchmark env that has dlib (bench/dlib_landmarks.py)")
    ev.add_argument("--decodes", default="hih,dark,centroid,argmax", help="decodes of our network to report")
    ev.add_argument("--views", default="1,2", help="crop views per face to report with the hih decode (1, 2, 4)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--protocol", default="both", choices=("both", "detector", "gt-box"),
                    help="detector: the project's detector + refinement (what a user gets); gt-box: ground-truth squares")
    ev.add_argument("--limit", type=_bounded(0, 1_000_000), default=0, help="only the first N test faces (0: all)")
    ev.add_argument("--title")
    ev.add_argument("--out", default=str(ROOT / "bench/results"))
    ev.set_defaults(func=cmd_eval)

    whats = ("quantization", "speed", "models", "jitter", "pipeline", "accuracy", "extract", "web", "startup", "avatar")
    b = sub.add_parser("bench", help=f"benchmarks: {' | '.join(whats)} (tables, JSON and plots in bench/results)")
    b.add_argument("what", choices=whats)
    b.add_argument("--clips", type=_bounded(1, 1000), default=6, help="extract: demo clips to extract")
    b.add_argument("--frames", type=_bounded(1, 100_000), default=150, help="extract: frames per clip")
    b.add_argument("--seconds", type=_bounded(5, 600), default=20,
                   help="web: measuring window per transport; avatar: seconds per landmarker")
    b.add_argument("--soak-minutes", dest="soak_minutes", type=_bounded(0, 600), default=0,
                   help="web: then stream for N minutes with tabs opening/closing and uploads, watching memory/threads/disk")
    b.add_argument("--minutes", type=float, default=5.0, help="pipeline: real-time paced minutes per landmarker, in rounds")
    b.add_argument("--faces", type=_bounded(1, 200), default=4, help="jitter: real test faces to animate")
    b.add_argument("--data", help="folder holding 300w/ and wflw/ (default ../shared/data)")
    b.add_argument("--device", default="cpu", help="speed: cpu | cuda")
    b.add_argument("--quick", action="store_true", help="speed: fewer repetitions")
    b.add_argument("--weights", help="jitter: HIH weights to measure (default: the shipped ones); "
                   "models: a candidate's, beside the shipped ones")
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
    t.add_argument("--threads", type=_bounded(0, 256), default=0)
    t.add_argument("--set", action="append", help="override a recipe value, e.g. optim.lr=0.002")
    t.add_argument("--preview", metavar="PNG", help="write a sheet of augmented training inputs with their landmarks "
                   "(to look at before a long run) and stop")
    t.set_defaults(func=cmd_train)

    sp = sub.add_parser("synth-poses", help="large-pose training faces made from the annotated ones (face profiling), "
                        "cached outside the repo; resumable")
    sp.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"))
    sp.add_argument("--out", default=str(Path.home() / ".cache/hihtrack/synth-poses"))
    sp.add_argument("--limit", type=_bounded(0, 1_000_000), default=0, help="only the first N faces (0 = all)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--side-px", type=_bounded(64, 1024), default=256, help="stored crop side, as the training cache")
    sp.add_argument("--box-scale", type=float, default=1.8, help="stored square / landmark-box side, as the training cache")
    sp.set_defaults(func=cmd_synth_poses)

    tp = sub.add_parser("train-eyes", help="train the eye network on eye crops: pupils (MediaPipe iris pseudo-labels) "
                        "and eye outlines (the annotation) on the 300-W training faces and their synthetic views")
    tp.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"))
    tp.add_argument("--synth", default=str(Path.home() / ".cache/hihtrack/synth-poses"))
    tp.add_argument("--steps", type=_bounded(1, 1_000_000), help="training steps (default: EyeTrainConfig's)")
    tp.add_argument("--width", type=_bounded(4, 256), help="channels of the first layers (default: EyeTrainConfig's)")
    tp.add_argument("--threads", type=_bounded(0, 256), default=0)
    tp.add_argument("--out", default=str(ROOT / "models/weights/eyes_300w.pt"))
    tp.set_defaults(func=cmd_train_eyes)

    av = sub.add_parser("average", help="the mean of several checkpoints of one run (e.g. its last epochs) as one")
    av.add_argument("checkpoints", nargs="+", help="checkpoints of one network, e.g. runs/NAME/epoch_01[2-6].pt")
    av.add_argument("--out", required=True, help="the averaged checkpoint to write")
    av.set_defaults(func=cmd_average)

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
    signal.signal(signal.SIGTERM, _terminate)     # a service manager's stop ends like Ctrl-C: outputs closed, summary printed
    try:
        return args.func(args)
    except UserError as e:      # settings, paths, media, weights, data: every room's user-facing errors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _terminate(signum, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)    # once: a second TERM must not cut the cleanup short
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
