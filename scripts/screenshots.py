"""Screenshots of the web page for docs/, taken in headless Chromium (Debian's) with Playwright.

    python scripts/screenshots.py --url http://127.0.0.1:8000 [--text "..."] [--max-steps 300] [--out docs]

Needs a running service (scripts/demo.sh, or a worker and the API by hand) and writes
OUT/web-running.png (mid-optimisation: chart and token strip) and OUT/web-result.png
(finished, text rebuilt). Only the URL given is opened.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--text", default="The old lighthouse keeper climbed the narrow stairs every night.")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--running-at", type=int, default=40, help="step at which to take the mid-run picture")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1000, "height": 900})
        page = browser.new_page()
        page.goto(f"{args.url.rstrip('/')}/")
        page.fill("#key", os.environ.get("PROTOTOK_API_KEY", ""))
        page.fill("#text", args.text)
        page.fill("#max-steps", str(args.max_steps))
        page.fill("#seeds", str(args.seeds))
        page.click("#submit")
        shot = False
        while page.text_content("#status") not in ("finished", "failed"):
            if not shot and int(page.text_content("#step") or 0) >= args.running_at:
                page.screenshot(path=args.out / "web-running.png", full_page=True)
                shot = True
            time.sleep(0.2)
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        page.click("#rebuild")
        page.wait_for_selector("#rebuilt:not([hidden])")
        page.screenshot(path=args.out / "web-result.png", full_page=True)
        print(f"wrote {args.out}/web-running.png and web-result.png; rebuilt: {page.text_content('#exact')}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
