"""Bybit instruments-info and fee-rate parsing against the official examples.

The fixtures are verbatim copies of the bybit-exchange/docs examples (see fixtures/SOURCES.md);
every expected value below was read off those files, so a parser drift shows up here first.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from worker.core.instruments import Category, FeeRates, InstrumentRules
from worker.venues.bybit.parse import BybitError, parse_envelope, parse_fee_rates, parse_instruments

BYBIT = FIXTURES / "bybit"


def _body(name: str) -> bytes:
    return (BYBIT / name).read_bytes()


def _only(rules: list[InstrumentRules]) -> InstrumentRules:
    assert len(rules) == 1
    return rules[0]


def _envelope(result: object, *, ret_code: int = 0, ret_msg: str = "OK") -> bytes:
    return json.dumps(
        {"retCode": ret_code, "retMsg": ret_msg, "result": result, "retExtInfo": {}, "time": 1}
    ).encode()


def _spot_row(**lot: str) -> dict[str, object]:
    """A spot row shaped like the official example, with lotSizeFilter fields replaced."""
    doc = json.loads(_body("rest_instruments_info_spot_response.json"))
    row: dict[str, object] = doc["result"]["list"][0]
    row["lotSizeFilter"] = lot
    return row


# --- instruments-info -------------------------------------------------------------------------


def test_spot_fixture_every_field() -> None:
    rules = _only(parse_instruments(_body("rest_instruments_info_spot_response.json")))
    assert rules == InstrumentRules(
        symbol="BTCUSDT",
        category=Category.SPOT,
        base_coin="BTC",
        quote_coin="USDT",
        tick_size=Decimal("0.1"),  # priceFilter.tickSize
        qty_step=Decimal("0.000001"),  # lotSizeFilter.basePrecision
        min_qty=Decimal("0.000011"),  # lotSizeFilter.minOrderQty (deprecated)
        min_notional=Decimal("5"),  # lotSizeFilter.minOrderAmt
        max_qty=Decimal("83"),  # lotSizeFilter.maxLimitOrderQty
        max_market_qty=Decimal("41.5"),  # lotSizeFilter.maxMarketOrderQty
        status="Trading",
    )
    # Exact wire text, not a float round trip.
    assert str(rules.qty_step) == "0.000001"
    assert str(rules.tick_size) == "0.1"


def test_linear_fixture_every_field() -> None:
    rules = _only(parse_instruments(_body("rest_instruments_info_linear_response.json")))
    assert rules == InstrumentRules(
        symbol="BTCUSDT",
        category=Category.LINEAR,
        base_coin="BTC",
        quote_coin="USDT",  # settleCoin
        tick_size=Decimal("0.10"),
        qty_step=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        min_notional=Decimal("5"),  # minNotionalValue
        max_qty=Decimal("1190.000"),  # maxOrderQty
        max_market_qty=Decimal("500.000"),  # maxMktOrderQty
        status="Trading",
    )
    assert str(rules.tick_size) == "0.10"
    assert str(rules.max_qty) == "1190.000"


def test_linear_prelisting_fixture_parses() -> None:
    rules = _only(parse_instruments(_body("rest_instruments_info_linear_prelisting_response.json")))
    assert rules == InstrumentRules(
        symbol="BIOUSDT",
        category=Category.LINEAR,
        base_coin="BIO",
        quote_coin="USDT",
        tick_size=Decimal("0.0001"),
        qty_step=Decimal("1"),
        min_qty=Decimal("1"),
        min_notional=Decimal("5"),
        max_qty=Decimal("70000"),
        max_market_qty=Decimal("14000"),
        status="PreLaunch",
    )


def test_linear_quote_coin_is_the_settle_coin() -> None:
    doc = json.loads(_body("rest_instruments_info_linear_response.json"))
    doc["result"]["list"][0]["settleCoin"] = "USDC"
    rules = _only(parse_instruments(json.dumps(doc).encode()))
    assert rules.quote_coin == "USDC"


def test_spot_deprecated_fields_missing_or_empty() -> None:
    """minOrderQty missing or "" means no minimum; maxLimitOrderQty falls back to maxOrderQty."""
    for lot in (
        {"basePrecision": "0.01", "minOrderAmt": "1", "maxOrderQty": "1000"},
        {
            "basePrecision": "0.01",
            "minOrderAmt": "1",
            "minOrderQty": "",
            "maxLimitOrderQty": "",
            "maxOrderQty": "1000",
            "maxMarketOrderQty": "",
        },
    ):
        body = _envelope({"category": "spot", "list": [_spot_row(**lot)]})
        rules = _only(parse_instruments(body))
        assert rules.min_qty == Decimal(0)
        assert rules.max_qty == Decimal("1000")
        assert rules.max_market_qty is None
        assert rules.qty_step == Decimal("0.01")
        assert rules.min_notional == Decimal("1")


def test_spot_without_any_max() -> None:
    body = _envelope(
        {"category": "spot", "list": [_spot_row(basePrecision="0.1", minOrderAmt="1")]}
    )
    rules = _only(parse_instruments(body))
    assert rules.max_qty is None
    assert rules.max_market_qty is None


def test_unknown_extra_fields_are_ignored() -> None:
    doc = json.loads(_body("rest_instruments_info_linear_response.json"))
    doc["result"]["list"][0]["someFutureField"] = {"nested": [1, 2]}
    doc["result"]["list"][0]["lotSizeFilter"]["newLimit"] = "7"
    doc["brandNewTopLevel"] = True
    rules = _only(parse_instruments(json.dumps(doc).encode()))
    assert rules.qty_step == Decimal("0.001")


def test_several_rows_keep_their_order() -> None:
    doc = json.loads(_body("rest_instruments_info_linear_response.json"))
    pre = json.loads(_body("rest_instruments_info_linear_prelisting_response.json"))
    doc["result"]["list"].append(pre["result"]["list"][0])
    symbols = [r.symbol for r in parse_instruments(json.dumps(doc).encode())]
    assert symbols == ["BTCUSDT", "BIOUSDT"]


def test_empty_list() -> None:
    assert parse_instruments(_envelope({"category": "spot", "list": []})) == []


def test_option_category_is_refused() -> None:
    with pytest.raises(BybitError, match="unsupported instrument category 'option'"):
        parse_instruments(_body("rest_instruments_info_option_response.json"))


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("qtyStep", "0", "qtyStep is '0', expected > 0"),
        ("qtyStep", "", "qtyStep is '', not a decimal number"),
        ("minOrderQty", "-1", "minOrderQty is '-1', expected >= 0"),
        ("minNotionalValue", "NaN", "minNotionalValue is 'NaN', not a decimal number"),
        ("maxOrderQty", "Infinity", "maxOrderQty is 'Infinity', not a decimal number"),
        ("qtyStep", "1_000", "qtyStep is '1_000', not a decimal number"),
    ],
)
def test_bad_numbers_raise(field: str, value: str, needle: str) -> None:
    doc = json.loads(_body("rest_instruments_info_linear_response.json"))
    doc["result"]["list"][0]["lotSizeFilter"][field] = value
    with pytest.raises(BybitError, match=needle) as info:
        parse_instruments(json.dumps(doc).encode())
    assert "'BTCUSDT'" in str(info.value)


def test_number_instead_of_string_is_malformed() -> None:
    """The wire sends decimals as strings; a JSON number would mean a changed contract."""
    doc = json.loads(_body("rest_instruments_info_spot_response.json"))
    doc["result"]["list"][0]["priceFilter"]["tickSize"] = 0.1
    with pytest.raises(BybitError, match=r"malformed result: Expected `str`, got `float`"):
        parse_instruments(json.dumps(doc).encode())


def test_missing_required_field_is_malformed() -> None:
    doc = json.loads(_body("rest_instruments_info_spot_response.json"))
    del doc["result"]["list"][0]["lotSizeFilter"]["basePrecision"]
    with pytest.raises(BybitError, match="basePrecision") as info:
        parse_instruments(json.dumps(doc).encode())
    assert info.value.ret_code == 0


# --- envelopes and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        (
            "rest_error_10002_pybit_test_mock.json",
            10002,
            "invalid request, please check your server timestamp or recv_window param",
        ),
        ("rest_error_10006_pybit_test_mock.json", 10006, "Too many visits"),
        ("rest_error_110043_pybit_test_mock.json", 110043, "leverage not changed"),
        # Official error shape without result/retExtInfo/time.
        ("rest_error_182120_repay.json", 182120, "Please use the repay and no-convert-repay API."),
        # Official error shape with a non-empty result.
        ("rest_error_3400045_set_margin_mode.json", 3400045, "Set margin mode failed"),
    ],
)
def test_error_envelope_raises_with_code_and_message(name: str, code: int, message: str) -> None:
    for parse in (parse_instruments, parse_fee_rates):
        with pytest.raises(BybitError) as info:
            parse(_body(name))
        assert info.value.ret_code == code
        assert info.value.ret_msg == message
        assert str(code) in str(info.value)
        assert message in str(info.value)


def test_success_envelope_with_other_ret_msgs() -> None:
    """Success retMsg may be OK, success, SUCCESS or empty; only retCode decides."""
    for ret_msg in ("OK", "success", "SUCCESS", ""):
        assert (
            parse_instruments(_envelope({"category": "linear", "list": []}, ret_msg=ret_msg)) == []
        )


def test_pre_v5_shape_is_malformed() -> None:
    """pybit's mock with ``ret_code``/``ret_msg`` is not a V5 envelope."""
    with pytest.raises(BybitError, match="missing required field `retCode`") as info:
        parse_instruments(_body("rest_error_10001_p2p_shape_pybit_test_mock.json"))
    assert info.value.ret_code is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b"[]",
        b"null",
        b'{"retCode": "0", "retMsg": "OK"}',
        b"<html>502</html>",
    ],
)
def test_malformed_body_raises(body: bytes) -> None:
    with pytest.raises(BybitError, match="malformed response") as info:
        parse_instruments(body)
    assert info.value.ret_code is None


def test_success_without_result_is_malformed() -> None:
    with pytest.raises(BybitError, match="no result"):
        parse_instruments(b'{"retCode": 0, "retMsg": "OK"}')


def test_common_response_without_category_is_malformed() -> None:
    with pytest.raises(BybitError, match="missing required field `category`"):
        parse_instruments(_body("rest_common_response.json"))


def test_envelope_fields() -> None:
    envelope = parse_envelope(_body("rest_instruments_info_linear_response.json"))
    assert envelope.ret_code == 0
    assert envelope.ret_msg == "OK"
    assert envelope.ret_ext_info == {}
    assert envelope.time == 1735809771618


def test_signing_string_is_redacted() -> None:
    """10004 texts echo the signed string (timestamp + api key + ...); it must not be kept."""
    key = "XXXXXXXXXXsecretkey"
    ret_msg = f'error sign! origin_string[1658384314791{key}5000{{"a":[1]}}]'
    body = json.dumps({"retCode": 10004, "retMsg": ret_msg, "result": {}}).encode()
    with pytest.raises(BybitError) as info:
        parse_instruments(body)
    assert key not in str(info.value)
    assert key not in info.value.ret_msg
    assert info.value.ret_msg == "error sign! origin_string[<redacted>]"
    assert "10004" in str(info.value)


def test_long_ret_msg_is_bounded() -> None:
    body = json.dumps({"retCode": 10001, "retMsg": "x" * 5000}).encode()
    with pytest.raises(BybitError) as info:
        parse_instruments(body)
    assert len(str(info.value)) < 400


# --- fee rates --------------------------------------------------------------------------------

# Shape and values from the official example, bybit-exchange/docs docs/v5/account/fee-rate.mdx
# ("Response Example"): derivatives rows carry no ``category`` and no ``baseCoin``.
FEE_RATE_DOC_EXAMPLE = b"""{
    "retCode": 0,
    "retMsg": "OK",
    "result": {
        "list": [
            {
                "symbol": "ETHUSDT",
                "takerFeeRate": "0.0006",
                "makerFeeRate": "0.0001"
            }
        ]
    },
    "retExtInfo": {},
    "time": 1676360412576
}"""


def test_fee_rates_doc_example() -> None:
    rates = parse_fee_rates(FEE_RATE_DOC_EXAMPLE)
    assert rates == {"ETHUSDT": FeeRates(maker=Decimal("0.0001"), taker=Decimal("0.0006"))}
    assert str(rates["ETHUSDT"].taker) == "0.0006"


def test_fee_rates_spot_category_rebate_and_option_rows() -> None:
    """Spot results carry ``category``; a negative maker rate is a rebate; option rows have
    ``symbol == ""`` and a baseCoin (per the doc's response-parameter table)."""
    body = _envelope(
        {
            "category": "spot",
            "list": [
                {"symbol": "BTCUSDT", "takerFeeRate": "0.001", "makerFeeRate": "-0.00005"},
                {"symbol": "", "baseCoin": "SOL", "takerFeeRate": "0.0003", "makerFeeRate": "0"},
            ],
        }
    )
    assert parse_fee_rates(body) == {
        "BTCUSDT": FeeRates(maker=Decimal("-0.00005"), taker=Decimal("0.001")),
        "SOL": FeeRates(maker=Decimal("0"), taker=Decimal("0.0003")),
    }


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"symbol": "BTCUSDT", "takerFeeRate": "abc", "makerFeeRate": "0"}, "takerFeeRate"),
        ({"symbol": "BTCUSDT", "takerFeeRate": "0.001"}, "makerFeeRate"),
        ({"symbol": "", "takerFeeRate": "0.001", "makerFeeRate": "0"}, "without symbol"),
    ],
)
def test_fee_rates_malformed(row: dict[str, str], needle: str) -> None:
    with pytest.raises(BybitError, match=needle):
        parse_fee_rates(_envelope({"list": [row]}))


def test_fixture_dir_is_present() -> None:
    """Guard: a missing shared folder should fail loudly, not skip silently."""
    assert isinstance(BYBIT, Path)
    assert (BYBIT / "rest_instruments_info_spot_response.json").is_file()
