import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("GLOG_minloglevel", "2")

SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_300w() -> Path:
    p = SHARED / "300w"
    if not p.is_dir():
        pytest.skip(f"real annotated faces not found at {p}")
    return p


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium whose webcam plays the demo clip."""
    from bench.browser import make_browser
    driver = make_browser(tmp_path_factory.mktemp("chrome"))
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    yield driver
    driver.quit()
