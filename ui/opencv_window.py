"""The native OpenCV window: q quit, s toggle smoothing, r toggle recording, d toggle drawing,
c calibrate the neutral face (expressions), g glasses (AR filter)."""
from __future__ import annotations

import os
import sys

import cv2

from hihtrack import DrawOptions, UserError, draw_frame, stats_lines

WINDOW = "hihtrack"


class DisplayError(UserError, RuntimeError):
    pass


def check_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError("no display found for the OpenCV window; use --ui gradio (web page) or --ui none")


class OpenCVWindow:
    def __init__(self, opts: DrawOptions | None = None):
        check_display()
        self.opts = opts or DrawOptions()
        self.draw = True
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise DisplayError(f"cannot open an OpenCV window ({str(e).splitlines()[-1][:80]}); "
                               "use --ui gradio or --ui none") from None

    def show(self, frame, stats: list[str]) -> str | None:
        """Draw and show one frame; returns the action of a pressed key, if any."""
        img = draw_frame(frame, self.opts, stats) if self.draw else frame.image
        cv2.imshow(WINDOW, img)
        key = cv2.waitKey(1) & 0xFF
        if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            return "quit"
        return {ord("q"): "quit", 27: "quit", ord("s"): "toggle_smoothing", ord("r"): "toggle_recording",
                ord("d"): "toggle_drawing", ord("c"): "calibrate", ord("g"): "toggle_glasses"}.get(key)

    def close(self) -> None:
        cv2.destroyWindow(WINDOW)


class WindowSession:
    """The window as a FaceTracker.run() callback: draws each frame and applies its keys to the tracker."""

    def __init__(self, window: OpenCVWindow, tracker, recorder=None):
        self.window, self.tracker, self.recorder = window, tracker, recorder

    def __call__(self, frame) -> bool:
        tracker, stats = self.tracker, self.tracker.stats
        recording = self.recorder is not None and not self.recorder.paused
        smoothing = tracker.settings.smoothing if tracker.smoothing_enabled else "off"
        action = self.window.show(frame, stats_lines(frame, stats.fps, stats.dropped, smoothing, recording))
        if action == "quit":
            return False
        if action == "toggle_smoothing":
            tracker.smoothing_enabled = not tracker.smoothing_enabled
        elif action == "toggle_recording" and self.recorder is not None:
            self.recorder.paused = not self.recorder.paused
        elif action == "toggle_drawing":
            self.window.draw = not self.window.draw
        elif action == "calibrate":
            self.tracker.calibrate()
        elif action == "toggle_glasses":
            self.window.opts.glasses = not self.window.opts.glasses
        return True
