"""hihtrack's Python API, the one run.py, the web app and `extract` use.

    from hihtrack import FaceTracker
    with FaceTracker(smoothing="shape") as tracker:
        for frame in tracker.track("clip.mp4"):
            for face in frame.faces:
                print(frame.index, face.track_id, face.landmarks[:3])

    photos = FaceTracker(running_mode="image")          # process(image): each a photo, detected on its own
    video = FaceTracker(running_mode="video")           # process(image, timestamp_s=t): tracked, smoothed
    live = FaceTracker(running_mode="live", result_callback=show)   # process_async(image): never waits

Settings are the keys of configs/pipeline.yaml (as keyword arguments, or `load_settings(...)`);
`hihtrack.extract_all(inputs, out_dir)` records landmarks for many videos at once (worker processes,
several videos batched through one network, or a Ray cluster).
"""
from importlib import import_module

# where each public name lives; imported on first use, so `import hihtrack.cli` (the command line)
# checks its arguments before torch, OpenCV or MediaPipe load
_EXPORTS = {"FaceTracker": "hihtrack.tracker", "InputError": "hihtrack.tracker", "RunSummary": "hihtrack.tracker",
            "TrackerStats": "hihtrack.tracker", "RunningMode": "hihtrack.tracker", "build_parts": "hihtrack.tracker",
            "SettingsError": "models.schema", "UserError": "models.schema", "SourceError": "stream.sources",
            "Face": "stream.frames", "Frame": "stream.frames", "TrackSettings": "stream.settings",
            "load_settings": "stream.settings", "resolve_auto": "stream.settings",
            "describe_choices": "stream.settings",
            "DrawOptions": "stream.draw", "draw_frame": "stream.draw",
            "stats_lines": "stream.draw", "load_recording": "stream.recorders", "build_sender": "stream.senders",
            "extract_all": "hihtrack.extract"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hihtrack' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
