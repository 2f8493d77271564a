"""The code stays ruff clean (rules in pyproject.toml)."""

import subprocess
import sys

from attendance_kit.paths import PROJECT_DIR


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(PROJECT_DIR)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
