"""Run a snippet in a fresh interpreter: what an import pulls in is only visible there."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def fresh_python(code: str) -> list[str]:
    """Run ``code`` (dedented) in a new Python process; return its output lines."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.splitlines()
