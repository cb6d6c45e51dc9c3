"""Headless Chromium with a fake camera (the demo clip), waits and clicks: for the browser tests and `bench web`."""
import shutil
import tempfile
import time

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


# The fake camera loops the demo clip's first 100 frames there and back (stream.demo.write_y4m): 198
# frames in the file, fewer than 2**STAMP_BITS, so every frame it shows has its own counter
FAKE_CAMERA_CLIP_FRAMES = 100
FAKE_CAMERA_FRAMES = 2 * FAKE_CAMERA_CLIP_FRAMES - 2


def make_browser(tmp):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from stream.demo import DemoSource, write_y4m
    clip = tmp / "face.y4m"
    write_y4m(clip, DemoSource(frames=FAKE_CAMERA_CLIP_FRAMES), stamp=True, there_and_back=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={clip}", "--window-size=1400,1400",
                 f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def wait(fn, timeout=60, what="condition", seen=None):
    """`fn()` once it is truthy; on timeout an AssertionError that names `what` and, given `seen`, what
    `seen()` showed last (a flaky wait is then readable from the log alone)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    last = f"; last seen: {seen()!r}" if seen else ""
    raise AssertionError(f"timed out waiting for {what}{last}")


def stats(driver) -> str:
    """The page's live stats line (fps, latency, faces, stage times, smoothing)."""
    return driver.find_element("css selector", "#stats").text


def wait_stats(driver, text: str, timeout=60, what=None) -> str:
    """Wait until the live stats show `text`; on timeout the error carries the stats last shown."""
    return wait(lambda: text in (s := stats(driver)) and s, timeout=timeout, what=what or repr(text),
                seen=lambda: stats(driver))


def click(driver, css):
    el = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", el)  # the footer covers buttons




def start_web_app(log_dir, args=(), env=None, timeout_s: float = 120):
    """`run.py track --ui gradio` on a free port, as a user starts it: (process, port) once it listens."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    env.pop("DISPLAY", None)
    log = Path(log_dir) / "server.log"
    proc = subprocess.Popen([sys.executable, str(root / "run.py"), "track", "--ui", "gradio", "--port", str(port), *args],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the web app did not start: {log.read_text()[-2000:]}")
