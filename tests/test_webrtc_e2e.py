"""The optional WebRTC transport (fastrtc, its own environment) in a real browser.

Skipped unless the interpreter running the tests has fastrtc (it pins gradio<6, so the main
environment does not). Measures the output frame rate the browser decodes (RTCPeerConnection stats).
"""
import importlib.util
import time
from pathlib import Path

import pytest

from tests.webutil import CHROMEDRIVER, CHROMIUM, click, wait

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(importlib.util.find_spec("fastrtc") is None, reason="fastrtc is not installed here"),
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")]

CAPTURE_PCS = """
window._pcs = [];
const Orig = window.RTCPeerConnection;
window.RTCPeerConnection = function (...args) { const pc = new Orig(...args); window._pcs.push(pc); return pc; };
window.RTCPeerConnection.prototype = Orig.prototype;
"""

DECODED = """
const done = arguments[arguments.length - 1];
(async () => { let n = 0;
  for (const pc of window._pcs) {
    (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded; });
  }
  done(n); })();
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import os
    import socket
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(root / "run.py"), "track", "--ui", "webrtc", "--port", str(port)],
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=120, what="app")
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=20)


def test_webrtc_stream_returns_annotated_frames(app, browser):
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_PCS})
    browser.get(app)
    wait(lambda: browser.find_elements("css selector", '#rtc button[aria-label="start stream"]'), what="start button")
    time.sleep(2)
    click(browser, '#rtc button[aria-label="start stream"]')
    wait(lambda: "faces 1" in browser.find_element("css selector", "#stats").text, timeout=90, what="a tracked face")
    n0, t0 = browser.execute_async_script(DECODED), time.time()
    time.sleep(15)
    n1, t1 = browser.execute_async_script(DECODED), time.time()
    stats = browser.find_element("css selector", "#stats").text
    browser.save_screenshot(str(Path(__file__).resolve().parents[1] / "test-artifacts" / "webrtc_live.png"))
    print(f"WebRTC: browser decoded {(n1 - n0) / (t1 - t0):.1f} fps; page stats: {stats}")
    assert (n1 - n0) / (t1 - t0) > 2 and "faces 1" in stats
