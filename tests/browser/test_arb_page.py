"""The issue's browser acceptance test: the real hub (``hub serve --all`` with its simulator and
three workers) driven through ``/arb`` in headless Chromium.

- ``/arb`` shows one row per instance, all RUNNING; the rows refresh themselves once a second
  (a row stopped and started behind the page's back changes on screen, and the page is proven
  not to have reloaded); a screenshot of the running fleet after some trading goes to
  ``docs/arb.png``.
- Stop and Start buttons: the clicked row goes STOPPED and back to RUNNING, the others stay
  RUNNING throughout.
- A halted row: stopped, its perp position changed behind its back on the simulator, started
  again: it resyncs, finds the mismatch and halts (process RUNNING, state ``halted``); ``/arb``
  styles it as an error and sorts it first; its row page shows the error and the worker's JSON
  log tail; the hub's account check flags the symbol above the rows; Flatten (confirmed in
  the JavaScript dialog; dismissed, nothing happens) brings it to ``flat`` with no perp
  position, on the page, in the API and on the simulator.
- Numbers on ``/arb`` are written for people (no exponent notation).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.hub_harness import REPO, ROWS, RunningHub, write_config

WAIT_S = 60.0  # every wait for the hub, a worker or the page
TRADE_WAIT_S = 120.0  # the demo's basis crosses the entry thresholds a few times a minute
DOCS_SCREENSHOT = REPO / "docs" / "arb.png"
IDS = [row["id"] for row in ROWS]
# `tr.error td { background: #fde8e8 }` in templates/base.html
ERROR_BACKGROUND = "rgb(253, 232, 232)"

pytestmark = pytest.mark.timeout(900)

# Everything the page shows of its rows, read in one go (the rows are replaced every second,
# so element handles go stale; one script sees one consistent table).
ROWS_JS = """
return Array.from(document.querySelectorAll('#rows > tr[data-id]')).map(tr => ({
  id: tr.dataset.id || '',
  trId: tr.id,
  process: tr.dataset.processState || '',
  state: tr.dataset.state || '',
  cls: tr.className,
  background: getComputedStyle(tr.cells[0]).backgroundColor,
  cells: Array.from(tr.cells).map(td => td.innerText.trim()),
  buttons: Object.fromEntries(Array.from(tr.querySelectorAll('button')).map(
    b => [b.name, !b.disabled])),
}));
"""
# Column indexes in templates/arb.html
COL_PROC, COL_STATE, COL_ORDERS_FILLS, COL_PERP, COL_ERROR = 3, 4, 8, 10, 15
MARKER = "arb-page-not-reloaded"
CALM = frozenset({"flat", "carry_hedged"})  # no leg working or unhedged
# The account check's line above the rows: per perp symbol, claims against the exchange.
FLAGS_JS = """
return Array.from(document.querySelectorAll('#rows > tr.account-mismatch')).map(
  tr => [tr.dataset.symbol || '', tr.innerText.trim()]);
"""


# ---------------------------------------------------------------- the hub


def _pids_of_fleet(hub: RunningHub) -> set[int]:
    pids = set()
    if hub.proc is not None:
        pids.add(hub.proc.pid)
    for name in [*hub.ids, "sim"]:
        record = hub.pid_record(name)
        if record is not None:
            pids.add(int(record["pid"]))
    with contextlib.suppress(Exception):
        pids |= {int(r["pid"]) for r in hub.rows().values() if r["pid"]}
    return pids


def _started_for(folder: Path) -> set[int]:
    """Live processes whose command line names a file of this fleet's folder (the hub, its
    workers and its simulator all do), whether or not the test saw their pids."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(folder) in part for part in cmdline) and _alive(process.info["pid"]):
            found.add(int(process.info["pid"]))
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_leftovers(run_dir: Path) -> None:
    """What a hub that never became ready may have left: every pid record's process group."""
    for record in run_dir.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, KeyError, ProcessLookupError):
            os.killpg(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    """The shipped demo's three rows on their own hub; every process is gone afterwards."""
    config = write_config(tmp_path / "fleet", ROWS)
    try:
        running = RunningHub(config)
    except BaseException:
        _kill_leftovers(config.parent / "run")
        raise
    seen: set[int] = set()
    try:
        seen = _pids_of_fleet(running)
        yield running
    finally:
        seen |= _pids_of_fleet(running) | _started_for(running.folder)
        running.close()
        seen |= _started_for(running.folder)
        deadline = time.monotonic() + WAIT_S
        while any(_alive(pid) for pid in seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = sorted(pid for pid in seen if _alive(pid))
        for pid in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        assert not left, f"processes of the hub's fleet outlived RunningHub.close: {left}"


@pytest.fixture
def page(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The session's browser; left on a blank page so no /arb keeps polling a dead hub."""
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            if browser.switch_to.alert:
                browser.switch_to.alert.dismiss()
        with contextlib.suppress(Exception):
            browser.get("about:blank")


# ---------------------------------------------------------------- reading the page


def page_rows(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], driver.execute_script(ROWS_JS))


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows by id, in the page's order."""
    return {r["id"]: r for r in rows}


def account_flags(driver: webdriver.Chrome) -> dict[str, str]:
    return dict(cast(list[tuple[str, str]], driver.execute_script(FLAGS_JS)))


def page_screenshot(
    driver: webdriver.Chrome, screenshot: Callable[[str], Path], label: str
) -> Path:
    """The whole page in one picture (the /arb table is wider than the window): the window is
    fitted to the document for the shot, then restored for the session's other tests."""
    size = driver.get_window_size()
    try:
        for _ in range(2):  # the table reflows once the window is wider
            width, height = cast(
                list[int],
                driver.execute_script(
                    "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight];"
                ),
            )
            driver.set_window_size(
                max(size["width"], min(width + 32, 3000)), min(max(360, height + 48), 4000)
            )
        return screenshot(label)
    finally:
        driver.set_window_size(size["width"], size["height"])


def wait_rows(
    driver: webdriver.Chrome,
    check: Callable[[dict[str, dict[str, Any]]], bool],
    what: str,
    timeout: float = WAIT_S,
) -> dict[str, dict[str, Any]]:
    """Poll the rows on the page (never reloading it) until ``check`` holds; the last rows seen
    are in the failure message."""
    seen: list[dict[str, dict[str, Any]]] = [{}]

    def ready(d: webdriver.Chrome) -> dict[str, dict[str, Any]] | None:
        seen[0] = by_id(page_rows(d))
        return seen[0] if check(seen[0]) else None

    try:
        return cast(
            dict[str, dict[str, Any]],
            WebDriverWait(driver, timeout, poll_frequency=0.2).until(ready),
        )
    except TimeoutException:
        shown = {
            i: (r["process"], r["state"], r["cls"], r["cells"][COL_ERROR])
            for i, r in seen[0].items()
        }
        raise AssertionError(
            f"/arb never showed {what} within {timeout:g} s; rows: {shown}"
        ) from None


def counts(row: dict[str, Any]) -> tuple[int, int]:
    """The 'orders / fills' cell as numbers (a dash is 0)."""
    orders, fills = (part.strip() for part in row["cells"][COL_ORDERS_FILLS].split("/"))
    return (int(orders) if orders.isdigit() else 0, int(fills) if fills.isdigit() else 0)


def mark_document(driver: webdriver.Chrome) -> None:
    driver.execute_script(f"window.arbMarker = '{MARKER}';")


def same_document(driver: webdriver.Chrome) -> bool:
    """True while the document marked by :func:`mark_document` is still the one shown."""
    return bool(driver.execute_script("return window.arbMarker || null;") == MARKER)


# ---------------------------------------------------------------- acting on the page


def expect_navigation(driver: webdriver.Chrome) -> Callable[[str], None]:
    """Mark the current document; the returned function waits until a new, fully loaded one
    replaced it. (Selenium's ``staleness_of`` asks Chrome about the old node, and mid-navigation
    Chrome may answer with an inspector error instead of "stale": seen in CI.)"""
    token = f"before-navigation-{time.monotonic_ns()}"
    driver.execute_script("window.arbNavigation = arguments[0];", token)

    def navigated(d: webdriver.Chrome) -> bool:
        try:
            return bool(
                d.execute_script(
                    "return window.arbNavigation !== arguments[0]"
                    " && document.readyState === 'complete';",
                    token,
                )
            )
        except WebDriverException:  # the script ran while the old document was going away
            return False

    def wait(what: str) -> None:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(navigated, f"{what}: no navigation")

    return wait


def submit(driver: webdriver.Chrome, locate: Callable[[], WebElement], what: str) -> None:
    """Click an enabled button whose form navigates (POST, then the redirect) and wait for the
    new document. The rows are replaced every second, so a handle may go stale: locate again."""
    navigated = expect_navigation(driver)

    def click(_: webdriver.Chrome) -> bool:
        try:
            button = locate()
            if not button.is_enabled():
                return False
            button.click()
            return True
        except WebDriverException:  # stale, gone, or Chrome's "does not belong to the document"
            return False

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(click, f"{what}: never enabled")
    navigated(what)


def row_button(driver: webdriver.Chrome, instance: str, name: str) -> Callable[[], WebElement]:
    return lambda: driver.find_element(By.CSS_SELECTOR, f'#row-{instance} button[name="{name}"]')


def running_everywhere(rows: dict[str, dict[str, Any]]) -> bool:
    return sorted(rows) == sorted(IDS) and all(
        r["process"] == "RUNNING" and r["state"] and "(stale)" not in r["cells"][COL_STATE]
        for r in rows.values()
    )


# ---------------------------------------------------------------- the tests


def test_rows_running_live_and_stop_start_buttons(
    hub: RunningHub, page: webdriver.Chrome, screenshot: Callable[[str], Path]
) -> None:
    served = hub.http.get("/arb").text  # rendered on the server at first load
    for instance in IDS:
        assert f'id="row-{instance}"' in served, f"/arb as served has no row {instance}"

    page.get(hub.url + "/arb")
    assert page.title == "arbhub · /arb"
    mark_document(page)
    rows = wait_rows(
        page,
        lambda rs: running_everywhere(rs) and list(rs) == IDS,  # no trouble: sorted by id
        "all three rows RUNNING, in id order",
    )
    assert [r["trId"] for r in rows.values()] == [f"row-{i}" for i in IDS]
    for r in rows.values():
        assert r["buttons"] == {"start": False, "stop": True, "flatten": True}, r
        assert "error" not in r["cls"].split(), r

    # Live: a row stopped and started behind the page's back changes on screen, no reload.
    first_pid = hub.row("btc")["pid"]
    assert hub.post("/arb/btc/stop").status_code == 200
    wait_rows(page, lambda rs: rs["btc"]["process"] == "STOPPED", "btc STOPPED (live)")
    assert same_document(page), "the page reloaded instead of updating its rows"
    assert hub.post("/arb/btc/start").status_code == 200
    rows = wait_rows(page, running_everywhere, "btc RUNNING again (live)")
    assert f"pid {first_pid}" not in rows["btc"]["cells"][COL_PROC], rows["btc"]
    assert f"pid {hub.row('btc')['pid']}" in rows["btc"]["cells"][COL_PROC], rows["btc"]
    assert same_document(page), "the page reloaded instead of updating its rows"

    # Some trading, so the screenshot for the README shows numbers (they arrive live too),
    # taken at a calm moment: no row is between its legs.
    rows = wait_rows(
        page,
        lambda rs: (
            running_everywhere(rs)
            and any(counts(r)[1] > 0 for r in rs.values())
            and all(r["state"] in CALM for r in rs.values())
        ),
        "a fill on some row, all rows RUNNING and flat or hedged",
        TRADE_WAIT_S,
    )
    assert same_document(page), "the page reloaded instead of updating its rows"
    shot = page_screenshot(page, screenshot, "arb-running")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    shutil.copyfile(shot, DOCS_SCREENSHOT)

    # Stop, by the button: eth goes STOPPED while btc and sol stay RUNNING throughout.
    others: set[str] = set()

    def eth_is(process_state: str) -> Callable[[dict[str, dict[str, Any]]], bool]:
        def check(rs: dict[str, dict[str, Any]]) -> bool:
            others.update(rs[i]["process"] for i in IDS if i != "eth")
            return bool(rs["eth"]["process"] == process_state)

        return check

    submit(page, row_button(page, "eth", "stop"), "Stop eth")
    assert page.current_url == hub.url + "/arb"
    rows = wait_rows(page, eth_is("STOPPED"), "eth STOPPED")
    assert others == {"RUNNING"}, f"other rows left RUNNING while eth stopped: {others}"
    assert rows["eth"]["buttons"] == {"start": True, "stop": False, "flatten": False}
    assert hub.row("eth")["process_state"] == "STOPPED"
    assert hub.row("eth")["pid"] is None

    # Start, by the button: eth is RUNNING again, the others never left RUNNING.
    submit(page, row_button(page, "eth", "start"), "Start eth")
    rows = wait_rows(page, eth_is("RUNNING"), "eth RUNNING again")
    assert others == {"RUNNING"}, f"other rows left RUNNING while eth restarted: {others}"
    wait_rows(page, running_everywhere, "all three rows RUNNING at the end")
    assert hub.row("eth")["pid"] is not None


def test_halted_row_is_shown_first_and_flattened_from_its_page(
    hub: RunningHub, page: webdriver.Chrome, screenshot: Callable[[str], Path]
) -> None:
    victim = "sol"  # last by id: sorted first only because it is halted
    symbol = next(r["future_symbol"] for r in ROWS if r["id"] == victim)
    qty = Decimal(next(r["order_qty"] for r in ROWS if r["id"] == victim))

    page.get(hub.url + "/arb")
    wait_rows(page, running_everywhere, "all three rows RUNNING")

    submit(page, row_button(page, victim, "stop"), f"Stop {victim}")
    wait_rows(page, lambda rs: rs[victim]["process"] == "STOPPED", f"{victim} STOPPED")

    # Behind its back: the exchange's perp position moves away from the snapshot's claim.
    snapshot = json.loads((hub.folder / "state" / f"{victim}.json").read_text())
    claim = Decimal(snapshot["state"]["perp"]["qty"])
    held = claim - qty if claim < 0 else claim + qty  # never zero, never the claim
    body = {"symbol": symbol, "side": "Buy" if held > 0 else "Sell", "size": str(abs(held))}
    assert hub.sim_admin("/sim/adjust", body) == {"ok": True}

    submit(page, row_button(page, victim, "start"), f"Start {victim}")
    rows = wait_rows(
        page,
        lambda rs: rs[victim]["process"] == "RUNNING" and rs[victim]["state"] == "halted",
        f"{victim} RUNNING and halted",
    )
    mark_document(page)
    halted = rows[victim]
    assert "error" in halted["cls"].split(), f"the halted row is not styled as an error: {halted}"
    assert halted["background"] == ERROR_BACKGROUND, halted
    assert "mismatch" in halted["cells"][COL_ERROR], halted
    assert next(iter(rows)) == victim, f"the halted row is not sorted first: {list(rows)}"
    for other in IDS:
        if other != victim:
            assert rows[other]["process"] == "RUNNING", rows[other]
            assert "error" not in rows[other]["cls"].split(), rows[other]
    api = hub.row(victim)
    assert (api["process_state"], api["state"]) == ("RUNNING", "halted"), api
    # The hub's own account check sees the same difference and flags it above the rows.
    WebDriverWait(page, WAIT_S, poll_frequency=0.5).until(
        lambda d: symbol in account_flags(d), f"no account-check flag for {symbol} on /arb"
    )
    flag = account_flags(page)[symbol]
    assert victim in flag and "exchange holds" in flag, flag
    assert same_document(page), "the page reloaded instead of updating its rows"
    page_screenshot(page, screenshot, "arb-halted")

    # The row page, by its link: the error, and the worker's JSON log ending with the halt.
    navigated = expect_navigation(page)
    WebDriverWait(page, WAIT_S).until(
        lambda d: _click_quietly(d, f"#row-{victim} td:first-child a"), "the id link"
    )
    navigated("the id link")
    assert page.current_url == f"{hub.url}/arb/{victim}"
    assert page.find_element(By.ID, "state").text == "halted"
    assert page.find_element(By.ID, "process-state").text == "RUNNING"
    error = page.find_element(By.ID, "error").text
    assert "venue mismatch" in error and symbol in error, error
    log_text = page.find_element(By.ID, "log").get_attribute("textContent") or ""
    log_lines = [line for line in log_text.splitlines() if line.strip()]
    entries = [entry for entry in map(_json_object, log_lines) if entry is not None]
    assert entries, f"no JSON log line in the row page's log tail: {log_lines[-5:]}"
    assert all(e.get("instance") == victim for e in entries), log_lines[-5:]
    assert any(e.get("event") == "halted" and e.get("level") == "error" for e in entries), (
        log_lines[-10:]
    )
    page.execute_script("const log = document.getElementById('log'); log.scrollTop = 1e9;")
    page_screenshot(page, screenshot, "halted-row-page")

    # Flatten: the confirmation is asked for; dismissed, nothing is sent.
    mark_document(page)
    flatten = page.find_element(By.CSS_SELECTOR, 'button[name="flatten"]')
    assert flatten.is_enabled()
    flatten.click()
    alert = WebDriverWait(page, WAIT_S).until(ec.alert_is_present(), "no confirm() for Flatten")
    assert f"Flatten {victim}" in alert.text, alert.text
    alert.dismiss()
    assert same_document(page), "Flatten was submitted although its confirmation was dismissed"
    assert hub.row(victim)["state"] == "halted"

    # Accepted: the worker unwinds to flat, with no perp position left anywhere.
    navigated = expect_navigation(page)
    page.find_element(By.CSS_SELECTOR, 'button[name="flatten"]').click()
    WebDriverWait(page, WAIT_S).until(ec.alert_is_present(), "no confirm() for Flatten")
    page.switch_to.alert.accept()
    navigated("Flatten")
    assert page.current_url == f"{hub.url}/arb/{victim}"
    hub.until(lambda: hub.row(victim)["state"] == "flat", f"{victim} flat after Flatten", WAIT_S)
    api = hub.row(victim)
    assert api["process_state"] == "RUNNING" and not api["error"], api
    assert Decimal(api["perp_position"]) == 0, api
    positions = hub.sim_admin("/sim/account")["accounts"][0]["positions"]
    assert [p for p in positions if p["symbol"] == symbol] == [], positions

    page.get(f"{hub.url}/arb/{victim}")
    assert page.find_element(By.ID, "state").text == "flat"
    assert page.find_elements(By.ID, "error") == []
    page.get(hub.url + "/arb")
    rows = wait_rows(
        page,
        lambda rs: rs[victim]["state"] == "flat" and list(rs) == IDS,  # no longer first
        f"{victim} flat on /arb, back in id order",
    )
    assert "error" not in rows[victim]["cls"].split(), rows[victim]
    assert Decimal(rows[victim]["cells"][COL_PERP]) == 0, rows[victim]
    WebDriverWait(page, WAIT_S, poll_frequency=0.5).until(
        lambda d: symbol not in account_flags(d), f"the account flag for {symbol} stayed"
    )


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _click_quietly(driver: webdriver.Chrome, css: str) -> bool:
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True
    except WebDriverException:  # stale, gone, or Chrome's "does not belong to the document"
        return False


# Cells of /arb that carry decimals: spot pos, perp pos, unhedged, PnL real / unreal,
# fees / funding.
DECIMAL_COLUMNS = (9, 10, 11, 12, 13)
EXPONENT = re.compile(r"\d[eE][-+]?\d")


def test_arb_numbers_have_no_exponent_notation(hub: RunningHub, page: webdriver.Chrome) -> None:
    page.get(hub.url + "/arb")
    rows = wait_rows(
        page,
        lambda rs: running_everywhere(rs) and all(r["cells"][5] != "—" for r in rs.values()),
        "all three rows RUNNING with books (a basis)",
    )
    shown = {
        f"{instance}: {row['cells'][col]}"
        for instance, row in rows.items()
        for col in DECIMAL_COLUMNS
        if EXPONENT.search(row["cells"][col])
    }
    assert not shown, f"numbers in exponent notation on /arb: {sorted(shown)}"
