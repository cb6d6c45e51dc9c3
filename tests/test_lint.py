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


def _imported_packages(path: Path) -> set[str]:
    import ast
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return {name.split(".")[0] for name in names}


def test_the_layers_stay_apart():
    """Data flows one way: models know nothing of cameras or UIs, stream nothing of UIs, and the UIs
    and examples reach the tracker only through the public API (hihtrack)."""
    rules = {"models": {"stream", "ui", "hihtrack"}, "stream": {"ui", "hihtrack"}, "hihtrack": {"ui"},
             "ui": {"models", "stream"}, "examples": {"models", "stream", "ui"}}
    front_ends = {ROOT / "hihtrack" / "cli.py"}          # the command line opens the window and the web page
    broken = [f"{path.relative_to(ROOT)} imports {sorted(_imported_packages(path) & banned)}"
              for room, banned in rules.items() for path in (ROOT / room).rglob("*.py")
              if _imported_packages(path) & banned and path not in front_ends]
    assert not broken, broken
