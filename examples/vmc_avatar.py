"""Drive an avatar over the VMC protocol (VSeeFace, VNyan, Warudo, ...): blendshapes and head pose
from every frame, sent as OSC to the avatar app's VMC receiver port.

    python examples/vmc_avatar.py [--source 0|FILE|demo] [--to 127.0.0.1:39539] [--frames 0]
"""
import argparse
import sys

from hihtrack import FaceTracker, build_sender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="auto")
    ap.add_argument("--to", default="127.0.0.1:39539", help="host:port of the avatar app's VMC receiver")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    args = ap.parse_args()
    vmc = build_sender(f"osc://{args.to}")
    with FaceTracker(source=args.source, max_frames=args.frames) as tracker:
        summary = tracker.run(outputs=[vmc], notify=lambda msg: print(msg, file=sys.stderr))
    print(f"sent {summary.frames} frames ({summary.frames_with_face} with a face) to {args.to} over VMC")


if __name__ == "__main__":
    main()
