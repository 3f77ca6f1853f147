"""Headless Debian Chromium for the browser tests, driven by selenium through /usr/bin/chromedriver
(no driver download): `bash scripts/ensure_chromium.sh` installs both; without them the test is
skipped, or fails under $CI (dagster_processes.missing_requirement)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster_processes import missing_requirement

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


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
        frame = driver.execute_script(  # headless Chromium still counts a window frame
            "return [outerWidth - innerWidth, outerHeight - innerHeight]")
        driver.set_window_size(viewport[0] + frame[0], viewport[1] + frame[1])
        yield driver
    finally:
        driver.quit()
