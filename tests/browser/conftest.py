"""Fixtures for the browser tier.

`browser` is one headless Chromium per test session, i.e. one per pytest-xdist worker process
that runs a browser test (workers that run none never start one). `screenshot` saves the current
page to $ARBHUB_SCREENSHOTS, or to the test's own tmp dir, and returns the PNG's path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser.chromium import save_screenshot, screenshot_dir, start_chrome

# Seconds the session's browser took to start; read by the smoke test to report it.
STARTUP_SECONDS: list[float] = []


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    started = time.perf_counter()
    driver = start_chrome()
    STARTUP_SECONDS.append(time.perf_counter() - started)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(
    browser: webdriver.Chrome, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[str], Path]:
    """`screenshot("after-click")` -> path of the PNG, named after the test and the label."""
    folder = screenshot_dir(tmp_path)

    def take(label: str) -> Path:
        return save_screenshot(browser, f"{request.node.name}-{label}", folder)

    return take
