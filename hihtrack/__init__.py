"""hihtrack's Python API, the one run.py, the web app and `extract` use.

    from hihtrack import FaceTracker
    with FaceTracker(smoothing="shape") as tracker:
        for frame in tracker.track("clip.mp4"):
            for face in frame.faces:
                print(frame.index, face.track_id, face.landmarks[:3])

    frame = tracker.process(image_bgr)                  # a photo: detected and refined on its own
    frame = tracker.process(image_bgr, timestamp_s=t)   # the next frame of a video: tracked, smoothed

Settings are the keys of configs/pipeline.yaml (as keyword arguments, or `load_settings(...)`);
`extract_all` records landmarks for many videos at once (worker processes or a Ray cluster).
"""
from hihtrack.tracker import FaceTracker, InputError, RunSummary, build_parts
from models.schema import SettingsError, UserError
from stream.frames import Face, Frame
from stream.settings import TrackSettings, load_settings

__all__ = ["FaceTracker", "Face", "Frame", "InputError", "RunSummary", "SettingsError", "TrackSettings", "UserError",
           "build_parts", "load_settings"]
