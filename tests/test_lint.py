"""ruff (configured in pyproject.toml) finds nothing."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (requirements-dev.txt)")
    r = subprocess.run([ruff, "check", "run.py", "hihtrack", "models", "stream", "ui", "bench", "tests", "examples"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
