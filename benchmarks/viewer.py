"""The viewer's first load against ``make run``, measured in a real browser, and its
screenshots for the README.

``make bench-viewer`` starts the development server as ``make run`` does (its demo org, its
viewer link), opens the link in Chromium with an empty cache, and prints what the first load
transferred and when the overview became interactive (its four tables filled), then the same
for a second load (assets from the cache). With ``--docs`` it also writes the screenshots
the README shows into ``docs/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "insights_audit.dev.devserver"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "AUDIT_SEAL_INTERVAL_SECONDS": "5"},
    )
    assert server.stdout is not None
    for line in server.stdout:
        found = re.search(r"Viewer:\s+(\S+)", line)
        if found:
            return server, found.group(1)
    raise SystemExit("the development server did not print a viewer link")


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is missing: apt-get install chromium")
    server, link = start_server()
    try:
        time.sleep(2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            sizes: list[int] = []
            page.on(
                "response",
                lambda r: sizes.append(int(r.headers.get("content-length") or len(r.body()))),
            )
            for attempt in ("first load, empty cache", "reload, assets from the cache"):
                sizes.clear()
                started = time.monotonic()
                if attempt.startswith("first"):
                    page.goto(link)
                else:
                    page.reload()
                for name in (
                    "My recently viewed",
                    "Most viewed",
                    "Trending this week",
                    "Recommended for me",
                ):
                    region = page.get_by_role("region", name=name)
                    expect(region).to_be_visible(timeout=10_000)
                    expect(region.get_by_text("Loading…")).to_have_count(0, timeout=10_000)
                elapsed = time.monotonic() - started
                kib = sum(sizes) / 1024
                print(
                    f"{attempt}: {kib:.0f} KiB in {len(sizes)} responses,"
                    f" interactive after {elapsed * 1000:.0f} ms"
                )
            if "--docs" in sys.argv:
                DOCS.mkdir(exist_ok=True)
                page.screenshot(path=str(DOCS / "viewer-overview.png"))
                page.get_by_role("region", name="Most viewed").get_by_role("link").first.click()
                expect(page.locator(".chart canvas").first).to_be_visible()
                page.screenshot(path=str(DOCS / "viewer-dashboard.png"))
                page.get_by_role("link", name="Report").click()
                expect(page.get_by_role("heading", name="Views per day")).to_be_visible()
                page.screenshot(path=str(DOCS / "viewer-report.png"))
                print(f"screenshots written to {DOCS}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
