"""Start Debian's headless Chromium under Selenium, and save screenshots.

Both binaries come from Debian (`chromium`, `chromium-driver`), installed by
scripts/install_browser.sh (which `make test` runs). Their paths are always passed explicitly, so
Selenium Manager is never consulted and never tries to download a browser or a driver.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from selenium import webdriver

# Belt and braces: even if some code path reached Selenium Manager, it must stay offline.
os.environ.setdefault("SE_OFFLINE", "true")

WINDOW_SIZE = (1400, 900)
PAGE_LOAD_TIMEOUT_S = 60.0
SCREENSHOTS_ENV = "ARBHUB_SCREENSHOTS"
INSTALL_HINT = "run `bash scripts/install_browser.sh` (or `make test`, which runs it)"


def find_binary(name: str) -> str:
    """Debian's /usr/bin/NAME first, else NAME on PATH; a clear error when neither exists."""
    debian = Path("/usr/bin") / name
    if debian.is_file() and os.access(debian, os.X_OK):
        return str(debian)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in /usr/bin or on PATH; {INSTALL_HINT}")
    return found


def chrome_options(binary: str) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: the setuid sandbox is unavailable
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        "--no-proxy-server",  # pages under test are on 127.0.0.1; never route them elsewhere
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(arg)
    return options


def start_chrome() -> webdriver.Chrome:
    """A new headless Chromium session; the caller must `quit()` it."""
    service = webdriver.ChromeService(executable_path=find_binary("chromedriver"))
    driver = webdriver.Chrome(options=chrome_options(find_binary("chromium")), service=service)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    return driver


def screenshot_dir(default: Path) -> Path:
    """$ARBHUB_SCREENSHOTS when set (created if missing), else `default`."""
    configured = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(configured) if configured else default
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(driver: webdriver.Chrome, name: str, folder: Path) -> Path:
    """Save the current viewport as FOLDER/NAME.png and return the path; raise if it failed."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "screenshot"
    path = folder / f"{stem}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"Chromium could not save a screenshot to {path}")
    return path
