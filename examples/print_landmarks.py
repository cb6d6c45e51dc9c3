"""Print landmarks from the webcam (or the built-in demo clip where there is none), as MediaPipe's
examples do: one line per face and frame.

    python examples/print_landmarks.py [--source 0|FILE|demo] [--frames 100]
"""
import argparse
import sys

from hihtrack import FaceTracker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="auto", help="auto (webcam, else demo), a camera index, a file, demo")
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    with FaceTracker(source=args.source, max_frames=args.frames) as tracker:
        for frame in tracker.track(notify=lambda msg: print(msg, file=sys.stderr)):
            for face in frame.faces:
                nose_x, nose_y = face.landmarks[30]              # iBUG-68 point 30: the nose tip
                yaw, pitch, roll = face.pose.rotation_deg if face.pose is not None else (float("nan"),) * 3
                print(f"frame {frame.index:4d} t={frame.timestamp_s:6.3f}s face {face.track_id}: "
                      f"nose ({nose_x:6.1f}, {nose_y:6.1f}) px, yaw {yaw:5.1f} deg, "
                      f"confidence {face.confidence.mean():.2f}, jawOpen {(face.expressions or {}).get('jawOpen', 0):.2f}")


if __name__ == "__main__":
    main()
