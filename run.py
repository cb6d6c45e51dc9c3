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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SUBCOMMANDS = ("track", "train", "eval", "bench", "export")


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


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from models.train import Recipe, train

    recipe = Recipe.from_dict(_load_yaml(args.config))
    for item in args.set or []:  # e.g. --set optim.lr=0.002
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        import yaml
        setattr(getattr(recipe, section), name, yaml.safe_load(value)) if section != "codec" else \
            recipe.codec.__setitem__(name, yaml.safe_load(value))
    if args.threads:
        torch.set_num_threads(args.threads)
    state = train(recipe, args.data, Path(args.out), args.device, Path(args.resume) if args.resume else None,
                  Path(args.cache) if args.cache else None)
    print(f"done: {state['epoch']} epochs, {state['step']} steps, {state['elapsed_s'] / 60:.1f} min, "
          f"best val NME {state['best_nme']:.2f}; weights in {args.out}/best.pt")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train an HIH model")
    t.add_argument("--config", default=str(ROOT / "configs/hih_small.yaml"))
    t.add_argument("--data", default=str(ROOT.parent / "shared/data/300w"))
    t.add_argument("--cache", help="pre-cropped face cache folder (built by models.data.build_cache)")
    t.add_argument("--out", default="runs/train")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", help="checkpoint (last.pt) to continue from")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--set", action="append", help="override a recipe value, e.g. optim.lr=0.002")
    t.set_defaults(func=cmd_train)
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
