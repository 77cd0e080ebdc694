"""Headless Chromium on the MLflow UI (a single-page app: its hash routes render only once its
JavaScript has fetched the runs): the DOM as rendered, its visible text, and screenshots.

Public API:
    CHROMIUM                       # the browser's path, or None when it isn't installed
    dump_dom(url, profile) -> str  # the DOM after the page settled
    visible_text(dom) -> str       # its text, without scripts, styles and SVG, whitespace folded
    screenshot(url, png, profile, size=(1400, 1800))
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
# no network beyond loopback, no first-run or background work, no sandbox (CI runs as root)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]  # fmt: skip
BUDGET_MS = 20_000  # virtual time the page gets to fetch and render


def _chromium(args: list[str], profile: Path, timeout: float = 120) -> str:
    """Run Chromium in its own process group (its helpers die with it); its stdout."""
    assert CHROMIUM, "Chromium is not installed"
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return out


def dump_dom(url: str, profile: Path, budget_ms: int = BUDGET_MS) -> str:
    return _chromium([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], profile)


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def screenshot(url: str, png: Path, profile: Path, size: tuple[int, int] = (1400, 1800)) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    window = f"--window-size={size[0]},{size[1]}"
    _chromium([f"--virtual-time-budget={BUDGET_MS}", window, f"--screenshot={png}", url], profile)
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", f"no screenshot of {url}"
    return png
