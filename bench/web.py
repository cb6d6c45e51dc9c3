"""The web app's live tab in a real browser, both transports in one run: WebRTC (aiortc on the
app's server, the default) and Gradio's streaming images; WebRTC with the page's default weights
(fast on a CPU) and with the default tracker weights (small), and MediaPipe as the competitor.

    python run.py bench web [--seconds 20]

Headless Chromium whose fake camera plays the demo clip at 30 fps, on the same 2 cores as the
server. Per row: frames per second the browser actually shows (WebRTC: frames decoded, from
getStats; images: distinct output images), the server's capture-to-output latency p50/p95 (the
page's own readout, over the last frames), glass-to-glass latency (a frame counter in the clip,
read back in the page), and CPU of the server process and of all Chromium processes (% of one core).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu_s(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - a browser helper process may be gone
            continue
    return total


def _chromium_procs():
    import psutil
    return [p for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "")]


def _latency(stats: str) -> tuple[float, float]:
    m = re.search(r"latency p50 (\d+) / p95 (\d+) ms", stats)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


# Reads the frame counter the fake camera's clip carries (stream.demo.stamp_counter) from the camera
# preview and from the tracked output on the page, every 10 ms: how many camera frames the output
# shown now is behind the camera frame shown now is the glass-to-glass delay, less the display time
# both share. Returns the frame differences.
GLASS_TO_GLASS_JS = """
const [seconds, bits, px, period, transport, w, h, done] = arguments;
(async () => {
let local, remote = transport === 'webrtc' ? document.getElementById('rtc-out') : document.querySelector('#out img');
if (transport === 'webrtc') {
  local = document.createElement('video'); local.muted = true; local.srcObject = window.hihRtcCamera(); await local.play();
} else { local = document.querySelector('#inp video'); }
const c = document.createElement('canvas'), g = c.getContext('2d', { willReadFrequently: true });
c.width = w; c.height = h;
function read(el) {   // drawn at the camera's size: WebRTC may send it scaled down (480x360 under load)
  if (!(el.videoWidth || el.naturalWidth)) return -1;
  g.drawImage(el, 0, 0, w, h);
  let n = 0;
  for (let b = 0; b < bits; b++) {
    const x = w - (bits + 1) * px + b * px + px / 4, y = h - 2 * px + px / 4;
    const d = g.getImageData(x, y, px / 2, px / 2).data;
    let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i + 1];
    n = 2 * n + (sum / (d.length / 4) > 128 ? 1 : 0);
  }
  return n < period ? n : -1;
}
const diffs = [], end = performance.now() + 1000 * seconds;
(function tick() {
  const a = read(local), b = read(remote);
  if (a >= 0 && b >= 0) diffs.push(((a - b) % period + period) % period);
  if (performance.now() < end) setTimeout(tick, 10); else done(diffs);
})();
})().catch((e) => done([]));
"""


def glass_to_glass_ms(browser, transport: str, seconds: float = 8.0, fps: float = 30.0) -> tuple[float, float]:
    """(p50, p95) ms between the camera frame the page shows and the tracked frame it shows."""
    from bench.browser import FAKE_CAMERA_FRAMES
    from stream.demo import FRAME_SIZE, STAMP_BITS, STAMP_PX
    browser.set_script_timeout(seconds + 30)
    diffs = browser.execute_async_script(GLASS_TO_GLASS_JS, seconds, STAMP_BITS, STAMP_PX, FAKE_CAMERA_FRAMES,
                                         transport, *FRAME_SIZE)
    if not diffs:
        return float("nan"), float("nan")
    p50, p95 = np.percentile(np.array(diffs) * 1000 / fps, [50, 95])
    return float(p50), float(p95)


def measure(browser, server, url: str, transport: str, seconds: float) -> dict:
    import psutil

    from bench.browser import click, stats, wait, wait_stats
    browser.get(url)
    if transport == "webrtc":
        wait(lambda: browser.find_elements("css selector", "#rtc-sid"), what="the WebRTC block")
        click(browser, "#rtc-start")
        count = lambda: browser.execute_async_script(   # noqa: E731
            "const done = arguments[0]; window.hihRtcStats().then(s => done(s ? s.framesDecoded : 0));")
    else:
        tab = wait(lambda: [b for b in browser.find_elements("css selector", "button[role=tab]") if "images" in b.text],
                   what="images tab")[0]
        browser.execute_script("arguments[0].click();", tab)
        click(browser, '#inp div[title="grant webcam access"] button')
        wait(lambda: browser.execute_script("const v=document.querySelector('#inp video'); return v && v.videoWidth > 0"),
             what="camera preview")
        click(browser, "#inp button.capture-button")
        browser.execute_script("""window._srcs = new Set(); window._poll = setInterval(() => {
            const i = document.querySelector('#out img'); if (i && i.src) window._srcs.add(i.src); }, 5);""")
        count = lambda: browser.execute_script("return window._srcs.size")   # noqa: E731
    wait_stats(browser, "faces 1", timeout=120, what="a tracked face")
    time.sleep(2)
    srv = psutil.Process(server.pid)
    chrome = _chromium_procs()
    n0, t0, srv0, chr0 = count(), time.perf_counter(), _cpu_s([srv]), _cpu_s(chrome)
    time.sleep(seconds)
    n1, t1, srv1, chr1 = count(), time.perf_counter(), _cpu_s([srv]), _cpu_s(chrome)
    page_stats = stats(browser)
    p50, p95 = _latency(page_stats)
    g2g = glass_to_glass_ms(browser, transport)
    tracked = re.search(r"([\d.]+) fps", page_stats)
    wall = t1 - t0
    if transport == "webrtc":
        click(browser, "#rtc-stop")
    else:
        click(browser, "#inp button.capture-button")
    return {"transport": transport, "browser_fps": (n1 - n0) / wall, "tracked_fps": float(tracked.group(1)) if tracked else float("nan"),
            "latency_p50_ms": p50, "latency_p95_ms": p95, "glass_to_glass_p50_ms": g2g[0], "glass_to_glass_p95_ms": g2g[1],
            "server_cpu_pct": 100 * (srv1 - srv0) / wall, "browser_cpu_pct": 100 * (chr1 - chr0) / wall,
            "page_stats": page_stats.replace("\n", " ")}


# (row name, transport, server flags), each on its own fresh server and browser
WEB_ROWS = [("webrtc (default: fast weights on a CPU)", "webrtc", ()),
            ("webrtc, --weights small", "webrtc", ("--weights", "small")),
            ("webrtc, --landmarker mediapipe", "webrtc", ("--landmarker", "mediapipe")),
            ("image", "image", ())]


def run_web_bench(out: Path, seconds: float = 20, log=print) -> str:
    from bench.browser import CHROMEDRIVER, CHROMIUM, make_browser, start_web_app
    if not (CHROMIUM and CHROMEDRIVER):
        raise RuntimeError("bench web needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    rows = []
    for name, transport, flags in WEB_ROWS:
        tmp = Path(tempfile.mkdtemp(prefix="hihtrack-bench-web-"))
        server, port = start_web_app(tmp, flags)
        browser = None
        try:
            browser = make_browser(tmp)
            rows.append({"row": name, **measure(browser, server, f"http://127.0.0.1:{port}/", transport, seconds)})
            log(f"{name}: {rows[-1]}")
        finally:
            if browser is not None:
                browser.quit()
            server.terminate()
            server.wait(timeout=30)
    out.mkdir(parents=True, exist_ok=True)
    (out / "web.json").write_text(json.dumps(rows, indent=1))
    lines = [f"# Live web tab ({seconds:.0f} s per row, headless Chromium with a fake 30 fps camera, "
             "browser and server on the same 2 cores, hih on onnxruntime)", "",
             "| transport | frames/s shown in the browser | tracked frames/s (server) | server latency p50 / p95 (ms) "
             "| glass-to-glass p50 / p95 (ms) | server CPU % | browser CPU % |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['browser_fps']:.1f} | {r['tracked_fps']:.1f} | "
                     f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} | "
                     f"{r['glass_to_glass_p50_ms']:.0f} / {r['glass_to_glass_p95_ms']:.0f} | "
                     f"{r['server_cpu_pct']:.0f} | {r['browser_cpu_pct']:.0f} |")
    lines += ["", "Frames shown: WebRTC, frames the browser decoded (each camera frame is answered at once with the "
              "newest annotated one, so the video runs at the camera's rate while the annotations change at the tracked "
              "rate); images, distinct output images. Tracked: the server pipeline's own rate. CPU: % of one core over the "
              "window (200 % = both cores). Latency: capture to tracked output on the server (the page's readout over its "
              "last frames). Glass-to-glass: the fake camera's clip carries a frame counter; every 10 ms the page's camera "
              "frame and its tracked output frame are read back (canvas), and their difference in camera frames (33.3 ms "
              "each) is the delay a user sees, less the display time both share."]
    _plot(rows, out / "web.png")
    table = "\n".join(lines) + "\n"
    (out / "web.md").write_text(table)
    return table


COLORS = ["tab:blue", "tab:green", "tab:orange", "tab:gray"]


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [r["row"].replace(", ", "\n") for r in rows]
    axes[0].bar(names, [r["browser_fps"] for r in rows], color=COLORS[:len(rows)])
    axes[0].set_ylabel("frames/s in the browser")
    axes[1].bar(names, [r["latency_p50_ms"] for r in rows], color=COLORS[:len(rows)], label="p50")
    axes[1].scatter(names, [r["latency_p95_ms"] for r in rows], color="k", zorder=3, label="p95")
    axes[1].set_ylabel("server latency (ms)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _disk_mb(folders: list[Path]) -> float:
    total = 0
    for folder in folders:
        for p in folder.rglob("*"):
            try:
                total += p.stat().st_size if p.is_file() else 0
            except OSError:
                continue
    return total / 1e6


def run_web_soak(out: Path, minutes: float = 10, log=print) -> str:
    """One tab streams over WebRTC for `minutes`; a second browser opens and closes live tabs and
    uploads a clip in turn. Every 10 s: the server's RSS, threads, and the size of its temp folder."""
    import psutil

    from bench.browser import click, make_browser, start_web_app, stats, wait, wait_stats
    from stream.demo import DemoSource
    from stream.video_writer import VideoWriter
    tmp = Path(tempfile.mkdtemp(prefix="hihtrack-soak-"))
    clip = tmp / "upload.mp4"
    demo = DemoSource(frames=60)
    writer = VideoWriter(clip, demo.fps, overwrite=True)
    for image, ts in demo.frames():
        writer.write(image, ts)
    writer.close()
    os.environ.pop("GRADIO_TEMP_DIR", None)       # the server's temp folder goes under TMPDIR, to watch
    server, port = start_web_app(tmp, env={"TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}/"
    streamer = churner = None
    samples = []
    try:
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        streamer, churner = make_browser(tmp / "a"), make_browser(tmp / "b")
        streamer.get(url)
        wait(lambda: streamer.find_elements("css selector", "#rtc-sid"), what="the WebRTC block")
        click(streamer, "#rtc-start")
        wait_stats(streamer, "faces 1", timeout=120, what="a tracked face")
        srv = psutil.Process(server.pid)
        t0, last_sample, step = time.time(), 0.0, 0
        opened, uploads = 0, 0
        while time.time() - t0 < minutes * 60:
            if step % 3 == 2:        # an upload
                churner.get(url)
                tab = wait(lambda: [b for b in churner.find_elements("css selector", "button[role=tab]") if "Video file" in b.text],
                           what="video tab")[0]
                churner.execute_script("arguments[0].click();", tab)
                wait(lambda: churner.find_elements("css selector", "#video_in input[type=file]"), what="upload input")
                churner.find_element("css selector", "#video_in input[type=file]").send_keys(str(clip))
                wait(lambda: churner.find_elements("css selector", "#video_in video"), what="uploaded preview")
                click(churner, "#run_video")
                wait(lambda: "60 frames" in churner.find_element("css selector", "#video_msg").text, timeout=180, what="upload done")
                uploads += 1
            else:                    # a live tab that opens, streams a few seconds and closes
                churner.get(url)
                wait(lambda: churner.find_elements("css selector", "#rtc-sid"), what="the WebRTC block")
                click(churner, "#rtc-start")
                wait_stats(churner, "faces", timeout=120, what="second tab")
                time.sleep(3)
                churner.get("about:blank")
                opened += 1
            step += 1
            if time.time() - last_sample >= 10:
                last_sample = time.time()
                samples.append({"t_s": round(last_sample - t0), "rss_mb": srv.memory_info().rss / 1e6, "threads": srv.num_threads(),
                                "disk_mb": _disk_mb([p for p in tmp.iterdir() if p.name.startswith("hihtrack-web-")]),
                                "stats": stats(streamer).split("\n")[0]})
                log(samples[-1])
    finally:
        for b in (streamer, churner):
            if b is not None:
                b.quit()
        server.terminate()
        server.wait(timeout=30)
    left = [p for p in tmp.iterdir() if p.name.startswith("hihtrack-web-")]
    out.mkdir(parents=True, exist_ok=True)
    (out / "web_soak.json").write_text(json.dumps({"samples": samples, "tabs_opened": opened, "uploads": uploads,
                                                   "temp_folders_left_after_shutdown": len(left)}, indent=1))
    first, last = samples[len(samples) // 5], samples[-1]
    peak = max(samples, key=lambda s: s["rss_mb"])
    text = (f"# Web server soak ({minutes:.0f} min): one tab streaming over WebRTC, {opened} live tabs opened and closed, "
            f"{uploads} uploads processed\n\n| | after {first['t_s']} s | at the end ({last['t_s']} s) | peak |\n|---|---|---|---|\n"
            f"| RSS MB | {first['rss_mb']:.0f} | {last['rss_mb']:.0f} | {peak['rss_mb']:.0f} |\n"
            f"| threads | {first['threads']} | {last['threads']} | {max(s['threads'] for s in samples)} |\n"
            f"| temp folder MB | {first['disk_mb']:.1f} | {last['disk_mb']:.1f} | {max(s['disk_mb'] for s in samples):.1f} |\n\n"
            f"Temp folders left after shutdown: {len(left)}. Streaming tab at the end: {last['stats']}\n")
    _plot_soak(samples, out / "web_soak.png")
    (out / "web_soak.md").write_text(text)
    return text


def _plot_soak(samples: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, key, label in zip(axes, ("rss_mb", "threads", "disk_mb"), ("RSS (MB)", "threads", "temp folder (MB)")):
        ax.plot(t, [s[key] for s in samples])
        ax.set_xlabel("minutes")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
