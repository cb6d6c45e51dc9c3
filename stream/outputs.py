"""The outputs a run writes to, opened from the settings: a landmark recording, the annotated video,
and live senders (VMC/OSC, UDP, WebSocket). Each has write(frame) and close()."""
from __future__ import annotations

from typing import Callable

from stream.expressions import SHAPE_NAMES
from stream.recorders import Recorder, RecordMeta
from stream.settings import TrackSettings
from stream.sources import Source

# what a recording keeps of the settings it was made with (after the automatic choices: FaceTracker)
RECORDED_SETTINGS = ("landmarker", "weights", "device", "precision", "backend", "threads", "crop_views", "detector",
                     "detector_min_score", "folder_mode")


def record_meta(settings: TrackSettings, landmarker, source: Source) -> RecordMeta:
    from dataclasses import asdict

    from models.weights import file_sha256
    wp = getattr(landmarker, "weights_path", None)
    smoother = settings.smoothing_settings()
    # a 68-point recording carries the pupils as points 68 and 69 (x_68, y_68, x_69, y_69)
    points = getattr(landmarker, "recorded_points", landmarker.num_points)
    scheme = landmarker.scheme + ("+pupils" if points == landmarker.num_points + 2 else "")
    return RecordMeta(scheme, points, settings.landmarker, file_sha256(wp) if wp else None,
                      source.description, source.fps, None,
                      {"mode": settings.smoothing, **(asdict(smoother) if smoother is not None else {})},
                      {k: getattr(settings, k) for k in RECORDED_SETTINGS},
                      list(SHAPE_NAMES) if settings.record_expressions else [])


def open_recorder(settings: TrackSettings, landmarker, source: Source, path=None) -> Recorder:
    return Recorder(path or settings.record, record_meta(settings, landmarker, source), settings.record_format,
                    settings.overwrite)


def open_outputs(settings: TrackSettings, landmarker, source: Source, draw: Callable | None = None) -> list:
    """Every output the settings ask for, all or none: a failure closes the ones already open.
    `draw(frame) -> BGR image` renders the annotated video (the UI room's drawing, passed in)."""
    from stream.senders import build_sender
    from stream.video_writer import AnnotatedVideoSink, VideoWriter
    opened: list = []
    try:
        if settings.record:
            opened.append(open_recorder(settings, landmarker, source))
        if settings.record_video:
            audio = str(settings.source) if not source.live else None    # a file's audio is passed through
            writer = VideoWriter(settings.record_video, source.fps or 30.0, settings.overwrite, audio_from=audio)
            opened.append(AnnotatedVideoSink(writer, draw))
        for url in settings.send:
            opened.append(build_sender(url))
    except BaseException:
        for out in opened:
            out.close()
        raise
    return opened
