"""Headless Chromium with a fake camera (the demo clip), waits and clicks: for the browser tests and `bench web`."""
import shutil
import tempfile
import time

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def make_browser(tmp):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from stream.demo import DemoSource, write_y4m
    clip = tmp / "face.y4m"
    write_y4m(clip, DemoSource(frames=150))
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



def wait(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def click(driver, css):
    el = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", el)  # the footer covers buttons


