"""The headless browser the playground's end-to-end test drives: Debian's chromium.

    .venv/bin/python scripts/browser.py     # install it if needed (as root) and print its path

Playwright's own browser download needs its CDN, which a machine running the tests may not
reach; the distribution's package needs only the Debian mirror. `make test` runs this before
the suite, so tests/e2e/test_playground.py finds the browser (and fails, saying to run this
script, when it is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
PACKAGE = "chromium"


def install() -> None:
    """`apt-get install chromium`, quietly; its output is shown only if it fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", PACKAGE]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"browser.py: `{' '.join(argv)}` failed ({done.returncode})")


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            f"browser.py: {CHROMIUM} is missing; install Debian's chromium package "
            f"(`sudo apt-get install -y {PACKAGE}`), then run this script again"
        )
    install()
    if not CHROMIUM.exists():
        raise SystemExit(f"browser.py: the {PACKAGE} package installed no {CHROMIUM}")
    return CHROMIUM


def main() -> int:
    print(ensure_chromium())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
