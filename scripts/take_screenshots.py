"""Re-take the README screenshots (``docs/screenshots/<page>.png``) in a real browser.

A thin wrapper: the screenshots are taken by the end-to-end tests (one per page, 1400 px
wide, full page, on the demo), so this runs those tests and lists the files written.

Run:  python scripts/take_screenshots.py                 (into docs/screenshots/)
      python scripts/take_screenshots.py --out /tmp/shots
Needs Playwright and /usr/bin/chromium; the first run builds the demo feature cache in a
temporary directory (a couple of minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests that take the shots: each page's test, and the Inspect upload (digit) test.
TESTS = ("tests/e2e/test_pages.py::test_page_opens", "tests/e2e/test_uploads.py::test_upload_digit_and_noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots",
                        help="directory for the PNGs")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    started = time.time()
    env = {**os.environ, "OOD_LENS_SCREENSHOT_DIR": str(out)}
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                           cwd=REPO_ROOT, env=env)
    shots = sorted(p for p in out.glob("*.png") if p.stat().st_mtime >= started)
    for path in shots:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if code == 0 and not shots:
        print("no screenshot was written: were the browser tests skipped (no Playwright / Chromium)?",
              file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
