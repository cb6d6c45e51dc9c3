"""The web app in a real browser: headless Chromium with a fake webcam playing the demo clip.

Needs Debian's chromium + chromium-driver and selenium (installed by .ci/run). Screenshots land in
test-artifacts/ (kept by CI as artifacts; ignored by git).
"""
import os
import time
from pathlib import Path

import pytest

from bench.browser import CHROMEDRIVER, CHROMIUM, click, start_web_app, stats, wait, wait_stats

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.e2e, pytest.mark.slow,      # a browser per module: the full run, not the edit loop
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app as a user starts it, with Gradio's cache in a folder we can watch."""
    tmp = tmp_path_factory.mktemp("web")
    cfg = tmp / "web.yaml"
    cfg.write_text("gradio:\n  delete_cache: [5, 5]\n  max_upload_mb: 2\n")     # layered on configs/pipeline.yaml
    cache = tmp / "gradio-cache"
    proc, port = start_web_app(tmp, ["--config", str(cfg)], env={"GRADIO_TEMP_DIR": str(cache)})
    url = f"http://127.0.0.1:{port}/"
    yield {"url": url, "cache": cache, "proc": proc, "port": port, "tmp": tmp}
    proc.terminate()
    proc.wait(timeout=20)


def _server_threads(proc) -> int:
    import psutil
    return psutil.Process(proc.pid).num_threads()


def _start_webrtc(browser, url):
    browser.get(url)
    wait(lambda: browser.find_elements("css selector", "#rtc-sid"), what="the WebRTC block")
    click(browser, "#rtc-start")


def _decoded(browser) -> tuple[float, float]:
    s = browser.execute_async_script("const done = arguments[0]; window.hihRtcStats().then(done);")
    return (s["framesDecoded"], s["seconds"]) if s else (0, 0.0)


def test_webrtc_live_tab_streams_tracked_frames(app, browser):
    """The default live transport: WebRTC on the app's own server. The browser keeps decoding
    annotated frames with a tracked face (the frame rate is measured by `bench web`, not here)."""
    threads_before = _server_threads(app["proc"])
    _start_webrtc(browser, app["url"])
    wait_stats(browser, "faces 1", timeout=90, what="a tracked face")
    f0, t0 = _decoded(browser)
    time.sleep(10)
    f1, t1 = _decoded(browser)
    fps = (f1 - f0) / (t1 - t0)
    page_stats = stats(browser)
    browser.save_screenshot(str(ARTIFACTS / "web_webrtc.png"))
    print(f"WebRTC: browser decoded {f1 - f0} frames in {t1 - t0:.1f} s = {fps:.1f} fps; page stats: {page_stats}; "
          f"server threads {threads_before} -> {_server_threads(app['proc'])}")
    # one face: a second track that a detection starts on the same face for a moment is merged soon
    wait_stats(browser, "faces 1", timeout=10, what="one tracked face")
    assert f1 - f0 > 10, (f0, f1)                        # frames keep flowing
    # the live tab's other controls reach the WebRTC session: calibration, recording with download
    click(browser, "#calibrate")
    wait(lambda: "neutral face taken" in browser.page_source, what="calibration message")
    click(browser, "#record input")
    wait_stats(browser, "REC", what="recording on")
    time.sleep(2)
    click(browser, "#record input")
    wait(lambda: "landmarks" in browser.find_element("css selector", "#rec_file").text.replace("\n", ""),
         what="the recording to download")
    click(browser, "#rtc-stop")


def test_webrtc_sessions_keep_their_own_settings_and_are_freed(app, browser):
    """Two tabs at once, each with its own smoothing; closing them frees their threads."""
    base = _server_threads(app["proc"])
    _start_webrtc(browser, app["url"])
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    _start_webrtc(browser, app["url"])
    none_radio = wait(lambda: [r for r in browser.find_elements("css selector", "input[type=radio]")
                               if r.get_attribute("value") == "none"], what="smoothing radio")[0]
    browser.execute_script("arguments[0].click();", none_radio)
    wait_stats(browser, "smoothing none", timeout=60,
         what="the second tab's own smoothing")
    browser.switch_to.window(first)
    wait_stats(browser, "smoothing shape", timeout=60,
         what="the first tab keeping its smoothing")
    busy = _server_threads(app["proc"])
    for handle in list(browser.window_handles):
        browser.switch_to.window(handle)
        click(browser, "#rtc-stop")
    browser.switch_to.window(first)
    for handle in browser.window_handles[1:]:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(first)
    browser.get("about:blank")
    # each live tab runs 4 threads (3 pipeline stages + its consumer); their trackers go back to the pool
    after = wait(lambda: (n := _server_threads(app["proc"])) <= busy - 2 * 4 + 1 and n, timeout=60,
                 what=f"threads freed (before {base}, busy {busy}, now {_server_threads(app['proc'])})")
    print(f"server threads: {base} before, {busy} with two live tabs, {after} after closing them")


def test_live_webcam_returns_annotated_frames(app, browser):
    browser.get(app["url"])
    tab = wait(lambda: [b for b in browser.find_elements("css selector", "button[role=tab]") if "images" in b.text],
               what="images tab")[0]
    browser.execute_script("arguments[0].click();", tab)
    wait(lambda: browser.find_elements("css selector", '#inp div[title="grant webcam access"] button'), what="webcam button")
    click(browser, '#inp div[title="grant webcam access"] button')
    wait(lambda: browser.execute_script("const v=document.querySelector('#inp video'); return v && v.videoWidth > 0"),
          what="camera preview")
    click(browser, "#inp button.capture-button")
    # count distinct output frames on the client for 15 s: browser-to-browser output rate
    browser.execute_script("""
        window._srcs = new Set(); window._t0 = performance.now();
        window._poll = setInterval(() => { const i = document.querySelector('#out img'); if (i && i.src) window._srcs.add(i.src); }, 5);
    """)
    wait_stats(browser, "faces 1", timeout=90, what="a tracked face")
    time.sleep(15)
    n, secs = browser.execute_script("return [window._srcs.size, (performance.now() - window._t0) / 1000]")
    page_stats = stats(browser)
    browser.save_screenshot(str(ARTIFACTS / "web_live.png"))
    print(f"browser saw {n} output frames in {secs:.1f} s = {n / secs:.1f} fps; page stats: {page_stats}")
    fps = float(page_stats.split("fps")[0].strip(" *"))
    assert fps > 0 and n / secs > 2
    wait_stats(browser, "faces 1", timeout=10, what="one tracked face")
    # disk stays bounded: the cache sweep (every 5 s, files older than 5 s) keeps the folder small
    files = [p for p in app["cache"].rglob("*") if p.is_file()]
    assert len(files) < 0.8 * n + 50, (len(files), n)
    click(browser, "#inp button.capture-button")   # stop streaming


def _open_video_tab(browser, url):
    browser.get(url)
    tab = wait(lambda: [b for b in browser.find_elements("css selector", "button[role=tab]") if "Video file" in b.text],
                what="video tab")[0]
    browser.execute_script("arguments[0].click();", tab)
    wait(lambda: browser.find_elements("css selector", "#video_in input[type=file]"), what="upload input")


def test_video_tab_processes_an_upload(app, browser):
    from stream.demo import DemoSource
    from tests.test_pipeline import write_video

    demo = DemoSource(frames=45)
    clip = app["tmp"] / "upload.mp4"
    write_video(clip, [demo.render(i) for i in range(45)])
    _open_video_tab(browser, app["url"])
    browser.find_element("css selector", "#video_in input[type=file]").send_keys(str(clip))
    wait(lambda: browser.find_elements("css selector", "#video_in video"), what="uploaded preview")
    click(browser, "#run_video")
    msg = wait(lambda: "frames" in browser.find_element("css selector", "#video_msg").text
                and browser.find_element("css selector", "#video_msg").text, timeout=180, what="processing result")
    assert "45 frames" in msg and "faces found in" in msg
    downloads = wait(lambda: browser.find_element("css selector", "#downloads").text, what="downloads")
    flat = downloads.replace("\n", "")   # the file list renders names and extensions in separate spans
    assert "annotated.mp4" in flat and "landmarks.csv" in flat, downloads
    browser.save_screenshot(str(ARTIFACTS / "web_video.png"))


def test_non_video_upload_gets_a_clear_message(app, browser):
    bad = app["tmp"] / "notes.mp4"
    bad.write_text("not a video\n" * 100)
    _open_video_tab(browser, app["url"])
    browser.find_element("css selector", "#video_in input[type=file]").send_keys(str(bad))
    time.sleep(2)
    click(browser, "#run_video")
    text = wait(lambda: ("cannot open" in browser.page_source or "choose a video" in browser.page_source
                          or "Invalid" in browser.page_source) and browser.page_source, timeout=60, what="an error message")
    assert "Traceback" not in text
    assert app["proc"].poll() is None   # the app keeps serving


def _rss_mb(proc) -> float:
    import psutil
    return psutil.Process(proc.pid).memory_info().rss / 1e6


def test_twenty_sessions_opened_and_closed_stay_bounded(app, browser):
    """Tabs come and go: the server's threads and memory return to a bound (no per-session leak)."""
    samples = []
    for i in range(20):
        _start_webrtc(browser, app["url"])
        wait_stats(browser, "faces 1", timeout=90, what=f"session {i}")
        click(browser, "#rtc-stop")
        browser.get("about:blank")
        time.sleep(1.0)
        samples.append((_server_threads(app["proc"]), _rss_mb(app["proc"])))
    print("threads / RSS MB after each closed session:", samples)
    threads = [n for n, _ in samples]
    # Gradio's anyio worker threads come and go with the load (idle ones are pruned only when new
    # work arrives), so a single count moves by up to 7 threads; a leak of one thread per session
    # would add 15 or more between the first and the last sessions.
    assert min(threads[-5:]) <= max(threads[:3]) + 4, samples
    rss3, rss20 = samples[2][1], samples[-1][1]
    assert rss20 <= rss3 + 80, samples


def test_ten_uploads_stay_bounded(app, browser):
    """The same upload processed 10 times: memory plateaus, the server's temp folder is swept."""
    from stream.demo import DemoSource
    from tests.test_pipeline import write_video

    demo = DemoSource(frames=20)
    clip = app["tmp"] / "again.mp4"
    write_video(clip, [demo.render(i) for i in range(20)])
    rss = []
    for i in range(10):
        _open_video_tab(browser, app["url"])
        browser.find_element("css selector", "#video_in input[type=file]").send_keys(str(clip))
        wait(lambda: browser.find_elements("css selector", "#video_in video"), what="uploaded preview")
        click(browser, "#run_video")
        wait(lambda: "20 frames" in browser.find_element("css selector", "#video_msg").text, timeout=120, what=f"upload {i}")
        rss.append(_rss_mb(app["proc"]))
    time.sleep(12)   # the sweep (every 5 s, files older than 5 s in the test config)
    files = [p for p in app["cache"].rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"server RSS after each upload (MB): {[round(r) for r in rss]}; cache after the sweep: {len(files)} files, {size_mb:.1f} MB")
    assert rss[-1] <= rss[2] + 60, rss
    assert size_mb < 5, (len(files), size_mb)


def test_an_upload_over_the_limit_is_refused_while_it_streams(app, browser):
    """gradio.max_upload_mb (2 in this test's config) is enforced by the server as the upload arrives."""
    big = app["tmp"] / "big.mp4"
    big.write_bytes(os.urandom(5_000_000))
    _open_video_tab(browser, app["url"])
    browser.find_element("css selector", "#video_in input[type=file]").send_keys(str(big))
    text = wait(lambda: any(w in browser.page_source.lower() for w in ("exceed", "too large", "maximum allowed"))
                and browser.page_source, timeout=60, what="a size message")
    assert "Traceback" not in text
    uploaded = [p for p in app["cache"].rglob("big*.mp4") if p.is_file()]
    assert not uploaded, uploaded
