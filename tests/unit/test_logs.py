"""JSON-lines logs: one object per line, exact decimals, and secrets never written."""

from __future__ import annotations

import io
import json
from decimal import Decimal

from worker.logs import JsonLog

KEY = "arbhub-sim-key"
SECRET = "arbhub-sim-secret"


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_are_json_lines_with_exact_decimals() -> None:
    out = io.StringIO()
    log = JsonLog("btc", stream=out)
    log.info("order_sent", link_id="btc-1-1", qty=Decimal("0.002"), price=Decimal("65000.10"))
    log.debug("hidden")  # below the threshold
    [record] = _lines(out)
    assert record["instance"] == "btc" and record["event"] == "order_sent"
    assert record["qty"] == "0.002" and record["price"] == "65000.10"
    assert str(record["ts"]).endswith("Z")


def test_secrets_are_redacted_everywhere_they_could_hide() -> None:
    out = io.StringIO()
    log = JsonLog("btc", stream=out)
    log.forget([KEY, SECRET, "abc"])  # too short to be a secret worth redacting
    log.error(
        "venue_error",
        message=f"error sign! origin_string[1700000000000{KEY}5000{{...}}]",
        nested={"headers": [f"X-BAPI-API-KEY: {KEY}"], SECRET: "as a key"},
        exc=RuntimeError(f"auth failed for {SECRET}"),
        word="abcdef contains abc",
    )
    text = out.getvalue()
    assert KEY not in text and SECRET not in text
    [record] = _lines(out)
    assert record["word"] == "abcdef contains abc"
    assert "<redacted>" in str(record["message"])
    assert record["exc"] == "auth failed for <redacted>"
