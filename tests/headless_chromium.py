"""Headless Debian Chromium for the browser tests, driven by selenium through /usr/bin/chromedriver
(no driver download): `bash scripts/ensure_chromium.sh` installs both; without them the test is
skipped, or fails under $CI (dagster_processes.missing_requirement).

Screenshots: the browser tests write the pictures the docs show (docs/*.png) only when
GXPLAB_UPDATE_SCREENSHOTS=1; otherwise into the test's tmp_path, so a plain test run leaves the
tracked files alone (`Screenshots`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster_processes import missing_requirement

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
UPDATE_SCREENSHOTS_ENV = "GXPLAB_UPDATE_SCREENSHOTS"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def updating_screenshots() -> bool:
    """Whether this run rewrites docs/*.png ($GXPLAB_UPDATE_SCREENSHOTS=1)."""
    return os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1"


class Screenshots:
    """Where a browser test saves its screenshots: docs/ when updating them, else `tmp_path`.
    `check_docs_untouched()` fails when a plain run changed one of the docs' pictures."""

    def __init__(self, tmp_path: Path, names: tuple[str, ...]) -> None:
        self.folder = DOCS if updating_screenshots() else tmp_path
        self.names = names
        self._before = {name: _read(DOCS / name) for name in names}

    def path(self, name: str) -> str:
        assert name in self.names, name
        return str(self.folder / name)

    def check_docs_untouched(self) -> None:
        if self.folder == DOCS:
            return
        for name in self.names:
            assert (self.folder / name).stat().st_size > 0, name  # the screenshot was taken
            assert _read(DOCS / name) == self._before[name], f"docs/{name} was rewritten"


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


@contextmanager
def headless_chromium(viewport: tuple[int, int], what: str) -> Iterator[Any]:
    """A driver whose page viewport is `viewport` (width, height); `what` names the test in the
    message when Chromium, its driver or selenium is missing."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            missing_requirement(f"{what} needs {path} (Debian packages chromium and "
                                "chromium-driver: run `bash scripts/ensure_chromium.sh`)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_requirement(f"{what} needs selenium (`pip install -e '.[dev]'`)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={viewport[0]},{viewport[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        set_viewport(driver, viewport)
        yield driver
    finally:
        driver.quit()


def set_viewport(driver: Any, viewport: tuple[int, int]) -> None:
    """Resize the window so that the page viewport is `viewport` (width, height)."""
    frame = driver.execute_script(  # headless Chromium still counts a window frame
        "return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(viewport[0] + frame[0], viewport[1] + frame[1])
