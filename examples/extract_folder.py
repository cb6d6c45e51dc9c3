"""Landmarks for a folder of videos from Python: one CSV per video, resumable (what
`run.py extract` does, through the same functions).

    python examples/extract_folder.py VIDEO_FOLDER OUT_FOLDER
"""
import sys
from pathlib import Path

from hihtrack import load_settings
from hihtrack.extract import expand_inputs, plan, run_local


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    videos, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(expand_inputs([videos]), out, "csv")
    results = run_local(jobs, load_settings(smoothing="shape"), "csv", workers=1, on_frames=lambda n: None,
                        on_result=lambda r: r)
    for r in results:
        print(f"{r.input}: skipped (done)" if r.skipped else f"{r.input}: error: {r.error}" if r.error
              else f"{r.input}: {r.frames} frames, {r.frames_with_face} with a face -> {r.output}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
