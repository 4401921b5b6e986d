"""Proves the browser tier end to end: a real HTTP server on 127.0.0.1, a page whose button runs
inline JavaScript that changes a text and POSTs to that server, Chromium clicking the button, and
a screenshot saved to disk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import conftest

WAIT_S = 30.0

PAGE = b"""<!doctype html>
<html>
<head><meta charset="utf-8"><title>arbhub browser smoke</title></head>
<body>
  <h1>Browser smoke</h1>
  <button id="start" type="button" onclick="start()">Start</button>
  <p id="status">idle</p>
  <script>
    function start() {
      var status = document.getElementById("status");
      status.textContent = "sending";
      fetch("/api/start", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({action: "start", instance: "smoke-1"})
      })
        .then(function (r) { return r.json(); })
        .then(function (body) { status.textContent = "started #" + body.count; })
        .catch(function (e) { status.textContent = "error: " + e; });
    }
  </script>
</body>
</html>
"""


class SmokeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SmokeHandler)
        self.lock = threading.Lock()
        self.posts: list[tuple[str, Any]] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class SmokeHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        self._reply(200, "text/html; charset=utf-8", PAGE)

    def do_POST(self) -> None:
        server = cast(SmokeServer, self.server)
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        with server.lock:
            server.posts.append((self.path, body))
            count = len(server.posts)
        self._reply(200, "application/json", json.dumps({"count": count}).encode())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def server() -> Iterator[SmokeServer]:
    srv = SmokeServer()
    thread = threading.Thread(target=srv.serve_forever, name="smoke-http", daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def status_text(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "status").text


def test_click_changes_text_and_posts_to_server(
    browser: webdriver.Chrome,
    server: SmokeServer,
    screenshot: Callable[[str], Path],
) -> None:
    browser.get(server.url)
    assert browser.title == "arbhub browser smoke"
    assert status_text(browser) == "idle"
    assert server.posts == []

    browser.find_element(By.ID, "start").click()
    # Wait for the round trip to finish either way, so a failure shows the page's own error.
    WebDriverWait(browser, WAIT_S).until(lambda d: status_text(d) not in ("idle", "sending"))

    assert status_text(browser) == "started #1"
    assert server.posts == [("/api/start", {"action": "start", "instance": "smoke-1"})]

    path = screenshot("after-click")
    assert path.suffix == ".png"
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")

    startup = conftest.STARTUP_SECONDS[0] if conftest.STARTUP_SECONDS else float("nan")
    print(f"browser startup {startup:.2f}s; screenshot {path}")  # shown by `pytest -rP` or `-s`


def test_wait_times_out_when_nothing_is_clicked(
    browser: webdriver.Chrome, server: SmokeServer
) -> None:
    """The wait above is not vacuous: without the click the text never changes."""
    browser.get(server.url)
    with pytest.raises(TimeoutException):
        WebDriverWait(browser, 1.0).until(lambda d: status_text(d).startswith("started"))
    assert status_text(browser) == "idle"
    assert server.posts == []
