"""The waste report's settings: every field with its bounds and description; invalid values name the field."""

from __future__ import annotations

import math

import pytest

from effopt.rightsizing import SettingError, describe, parse_settings
from effopt.waste import WasteSettings


def test_every_field_declares_a_description_and_the_numbers_their_bounds():
    info = {i.name: i for i in describe(WasteSettings)}
    assert list(info) == ["recommender", "pricing", "top", "cache_period_s", "cache_worker_cores"]
    assert all(i.description for i in info.values())
    assert (info["top"].type, info["top"].default, str(info["top"].bounds)) == ("int", 10, "[0, inf)")
    assert str(info["cache_period_s"].bounds) == str(info["cache_worker_cores"].bounds) == "(0, inf)"
    assert info["cache_period_s"].type == "float or none" and info["cache_period_s"].default is None


@pytest.mark.parametrize(("values", "message"), [
    ({"top": -1}, "WasteSettings.top: must be in [0, inf), got -1"),
    ({"top": 2.5}, "WasteSettings.top: must be an integer, got 2.5"),
    ({"recommender": "oracle"}, "WasteSettings.recommender: must be one of effopt, krr, vpa, got 'oracle'"),
    ({"pricing": "reserved"}, "WasteSettings.pricing: must be one of on_demand, spot, got 'reserved'"),
    ({"cache_period_s": 0.0}, "WasteSettings.cache_period_s: must be in (0, inf), got 0.0"),
    ({"cache_period_s": math.inf}, "WasteSettings.cache_period_s: must be in (0, inf), got inf"),
    ({"cache_worker_cores": math.nan}, "WasteSettings.cache_worker_cores: must be a number, got NaN"),
])
def test_an_invalid_value_is_rejected_with_the_field_named(values, message):
    with pytest.raises(SettingError) as err:
        WasteSettings(**values)
    assert str(err.value) == message


def test_settings_parse_from_strings_as_the_cli_and_dag_pass_them():
    s = parse_settings(WasteSettings, {"top": "5", "pricing": "spot", "cache_period_s": "3600",
                                       "cache_worker_cores": "none"})
    assert s == WasteSettings(recommender="krr", pricing="spot", top=5, cache_period_s=3600.0)
    with pytest.raises(SettingError, match=r"WasteSettings\.top: must be an integer, got 'many'"):
        parse_settings(WasteSettings, {"top": "many"})
    with pytest.raises(SettingError, match="WasteSettings has no setting"):
        parse_settings(WasteSettings, {"threshold": "0.1"})
