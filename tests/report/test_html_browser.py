"""edgeq report in a real browser: headless Chromium (Debian ``chromium``) renders the page
to a screenshot, which must not be blank and must show the plots (their colours, in
their places), and its DOM must hold every plot as an inline <svg> with drawn content.

Skipped only when chromium is not installed and $CI is not set: in CI it must run."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke
from test_html import build_report, small_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium); required when $CI is set")

PLOT_IDS = ["pareto-size", "pareto-latency", "latency", "thermal", "sensitivity"]
# Plot colours that nothing else on the page uses (text, links, tables are other hues).
BLUE, RED = (0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28)


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is required in CI: apt-get install chromium"
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
           page.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _render(tmp_path: Path, report: dict) -> Path:
    src, out = tmp_path / "report.json", tmp_path / "report.html"
    src.write_text(json.dumps(report))
    r = invoke(["report", src, "-o", out])
    assert r.exit_code == 0, r.output
    return out


def _near(img: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    return (np.abs(img.astype(int) - np.array(rgb)).sum(axis=-1) < tol)


def test_screenshot_shows_the_plots(tmp_path):
    from PIL import Image

    rep = small_report()
    rep["results"][0]["profile"]["thermal"] = build_report(2)["results"][0]["profile"]["thermal"]
    rep["sensitivity"] = build_report(1)["sensitivity"]
    page = _render(tmp_path, rep)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2000")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)

    # Not blank: plenty of ink, many colours (anti-aliased text and plots).
    ink = (img.sum(axis=-1) < 3 * 235).mean()
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert ink > 0.02, f"only {ink:.1%} of the page is not white"
    assert colours > 200, f"only {colours} distinct colours"

    # The plots are drawn: the palette's blue and red marks appear below the header and
    # the table (y > 400 px), spread down the page as the plots are, not in one spot.
    blue, red = _near(img, BLUE)[400:], _near(img, RED)[400:]
    assert blue.sum() > 150 and red.sum() > 50, (blue.sum(), red.sum())
    bands = {y // 100 for y in np.where(blue.any(axis=1))[0]}
    assert len(bands) >= 5, f"plot marks only in bands {sorted(bands)}"

    # Every plot is in the rendered DOM as an inline svg with shapes and text.
    dom = chromium(tmp_path, page, "--dump-dom").stdout
    for plot_id in PLOT_IDS:
        fig = re.search(rf'<figure id="{plot_id}"[^>]*>(.*?)</figure>', dom, re.S)
        assert fig, f"no figure {plot_id} in the rendered DOM"
        svg = fig.group(1)
        assert svg.lstrip().startswith("<svg"), plot_id
        assert len(re.findall(r"<path", svg)) > 10, f"{plot_id}: the svg has no drawing"
        assert re.search(r"<text[^>]*>", svg), f"{plot_id}: no text in the svg"


def test_hundred_cell_page_in_browser(tmp_path):
    """The 100-cell page parses in the browser with every plot, all 100 rows and the
    failed budgets in red, and nothing in it was fetched (offline render succeeds)."""
    from PIL import Image

    page = _render(tmp_path, build_report(100))
    dom = chromium(tmp_path, page, "--dump-dom").stdout
    assert dom.count("<svg") == len(PLOT_IDS)
    for plot_id in PLOT_IDS:
        assert f'id="{plot_id}"' in dom
    table = dom.split('<table id="results">')[1].split("</table>")[0]
    assert table.count("<tr") == 101
    shot = tmp_path / "top.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,1200")
    img = np.asarray(Image.open(shot).convert("RGB"))
    # The failed-budget rows are tinted red (#fdecea) near the top of the page.
    assert _near(img, (0xfd, 0xec, 0xea), tol=12).mean() > 0.05
