"""Landmarks for a folder of videos from Python: one CSV per video, resumable (what
`hihtrack extract` does, through the same function).

    python examples/extract_folder.py VIDEO_FOLDER OUT_FOLDER
"""
import sys

from hihtrack import extract_all


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    report = extract_all([sys.argv[1]], sys.argv[2], smoothing="shape", workers=1)
    for job in report.skipped:
        print(f"{job.input}: skipped (done)")
    for r in report.results:
        print(f"{r.input}: error: {r.error}" if r.error
              else f"{r.input}: {r.frames} frames, {r.frames_with_face} with a face -> {r.output}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
