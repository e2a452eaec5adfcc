"""The README's main command on the real local model: `kasloop demo --local` from a clean home exits 0 and
leaves the file exactly as the goal asked (`make demo` runs the same command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kasloop.cli.demo import LOCAL_LINE, LOCAL_PATH


def test_the_local_demo_exits_0_with_the_exact_file(local_model: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "COLUMNS": "80"}  # a clean home; KASLOOP_CACHE (the fixture's) has the model
    env.pop("KASLOOP_HOME", None)
    env.pop("KASLOOP_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "kasloop", "demo", "--local", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "demo" / "workspace" / LOCAL_PATH).read_text().strip() == LOCAL_LINE
    assert "Done:" in proc.stdout and "Traceback" not in proc.stderr
    assert not any(home.iterdir()), "the demo keeps its state in its own folder, not in the user's home"
