"""Each report rendered in headless Chromium: no broken image, no script error, nothing
fetched from outside the page, no page wider than the window; screenshots are saved.

Chromium (Debian's ``chromium``) is installed by ``.ci/run``, which sets
``LLMFBN_REQUIRE_CHROMIUM=1`` so that a missing browser fails there instead of skipping.
Screenshots go to ``$LLMFBN_SCREENSHOT_DIR`` when set, else to the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import find_chromium, render

WINDOW_WIDTH = 1280


@pytest.fixture(scope="module")
def chromium():
    found = find_chromium()
    if found is None:
        if os.environ.get("LLMFBN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("Chromium is required (LLMFBN_REQUIRE_CHROMIUM=1) and was not found: "
                        "apt-get install -y chromium")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    return found


def _screenshots(tmp_path: Path, name: str) -> Path:
    root = os.environ.get("LLMFBN_SCREENSHOT_DIR")
    return Path(root) / name if root else tmp_path / name


def _check(page: Path, chromium: str, folder: Path):
    seen = render(page, folder, width=WINDOW_WIDTH, chromium=chromium)
    assert seen.problems == [], f"{page.name}: {seen.problems}"
    assert seen.n_images > 0
    assert all(p.stat().st_size > 10_000 for p in seen.screenshots)
    return seen


def test_toy_reports_render(toy_reports, chromium, tmp_path):
    for kind, page in toy_reports.items():
        seen = _check(page, chromium, _screenshots(tmp_path, f"toy_{kind}"))
        assert seen.scroll_width <= WINDOW_WIDTH


def test_the_check_fails_on_a_broken_page(tmp_path, chromium):
    """The test can fail: a missing and a corrupt image, a script error, an external
    resource and a too-wide page are each reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body>"
                    "<img alt='missing' src='missing.png'/>"
                    "<img alt='corrupt' src='data:image/png;base64,AAAA'/>"
                    "<script>notDefined();</script>"
                    "<div style='width:3000px'>wide</div></body></html>")
    problems = " | ".join(render(page, chromium=chromium).problems)
    for expected in ("broken image: missing", "broken image: corrupt",
                     "ReferenceError: notDefined", "external request: ",
                     f"px wide, window {WINDOW_WIDTH} px"):
        assert expected in problems, problems


@pytest.mark.slow
def test_demo_reports_render(planted_run, chromium, tmp_path):
    """The end-to-end run's reports: every subject's and the group's."""
    _, output = planted_run
    pages = sorted(output.glob("sub-*.html")) + sorted((output / "group").glob("*.html"))
    assert len(pages) >= 4
    for page in pages:
        _check(page, chromium, _screenshots(tmp_path, "demo"))
