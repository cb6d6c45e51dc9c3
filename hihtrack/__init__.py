"""hihtrack's Python API, the one run.py, the web app and `extract` use.

    from hihtrack import FaceTracker
    with FaceTracker(smoothing="shape") as tracker:
        for frame in tracker.track("clip.mp4"):
            for face in frame.faces:
                print(frame.index, face.track_id, face.landmarks[:3])

    frame = tracker.process(image_bgr)                  # a photo: detected and refined on its own
    frame = tracker.process(image_bgr, timestamp_s=t)   # the next frame of a video: tracked, smoothed

Settings are the keys of configs/pipeline.yaml (as keyword arguments, or `load_settings(...)`);
`hihtrack.extract` records landmarks for many videos at once (worker processes or a Ray cluster).
"""
from importlib import import_module

# where each public name lives; imported on first use, so `import hihtrack.cli` (the command line)
# checks its arguments before torch, OpenCV or MediaPipe load
_EXPORTS = {"FaceTracker": "hihtrack.tracker", "InputError": "hihtrack.tracker", "RunSummary": "hihtrack.tracker",
            "build_parts": "hihtrack.tracker", "SettingsError": "models.schema", "UserError": "models.schema",
            "Face": "stream.frames", "Frame": "stream.frames", "TrackSettings": "stream.settings",
            "load_settings": "stream.settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hihtrack' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
