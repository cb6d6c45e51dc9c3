"""The native OpenCV window: q quit, s toggle smoothing, r toggle recording, d toggle drawing,
c calibrate the neutral face (expressions), g glasses (AR filter)."""
from __future__ import annotations

import os
import sys

import cv2

from ui.draw import DrawOptions, draw_frame

WINDOW = "hihtrack"


class DisplayError(RuntimeError):
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
