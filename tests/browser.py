"""Open a page in Debian's Chromium through Playwright (never `playwright install`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Visit:
    failed: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    svgs: int = 0
    text: str = ""


def visit(url: str) -> Visit:
    """Load `url`; collect failed requests, undecodable images and the page text."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    out = Visit()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.on("requestfailed", lambda r: out.failed.append(r.url))
        page.on("response", lambda r: out.failed.append(r.url) if r.status >= 400 else None)
        page.goto(url)
        page.wait_for_load_state("networkidle")
        out.broken_images = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)"
        )
        out.images = page.evaluate("document.images.length")
        out.svgs = page.evaluate("document.querySelectorAll('svg').length")
        out.text = page.inner_text("body")
        browser.close()
    return out
