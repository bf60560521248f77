"""Which Chromium the browser tests drive (`python -m cdp.browser --ensure` is run by make test).

Order: CHROMIUM_PATH, then Debian's /usr/bin/chromium (or chromium-browser), then Playwright's
own download (only where the machine can fetch it: `playwright install chromium`).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
               "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


def system_chromium() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def playwright_chromium() -> str | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:  # noqa: BLE001 - no browser registry yet
        return None
    return path if path and Path(path).exists() else None


def ensure() -> int:
    if system_chromium():
        print(f"Browser tests use {system_chromium()}")
        return 0
    if playwright_chromium():
        print(f"Browser tests use Playwright's Chromium at {playwright_chromium()}")
        return 0
    print("No Chromium found (CHROMIUM_PATH, /usr/bin/chromium); trying `playwright install chromium` …")
    result = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=False)
    if result.returncode != 0:
        print("Could not get a browser: browser tests will be skipped. Install Debian's `chromium` or set "
              "CHROMIUM_PATH.")
    return 0


if __name__ == "__main__":
    sys.exit(ensure() if "--ensure" in sys.argv else 0)
