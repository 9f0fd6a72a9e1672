"""Compare-before-write semantics: server defaults and normalised quantities are not differences."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modeldeploy.diff import is_subset, parse_quantity


def test_defaults_added_by_the_server_are_not_a_difference() -> None:
    want = {"spec": {"ports": [{"name": "http", "port": 80}]}}
    have = {"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.10"}}
    assert is_subset(want, have)


def test_changed_value_added_or_removed_list_item_is_a_difference() -> None:
    have = {"spec": {"replicas": 2, "args": ["a", "b"]}}
    assert not is_subset({"spec": {"replicas": 3}}, have)
    assert not is_subset({"spec": {"args": ["a"]}}, have)
    assert not is_subset({"spec": {"args": ["a", "b", "c"]}}, have)
    assert not is_subset({"spec": {"missing": "x"}}, have)


def test_zero_values_match_omitted_fields() -> None:
    assert is_subset({"paused": False, "env": [], "value": ""}, {})
    assert not is_subset({"paused": True}, {})


def test_types_are_not_coerced() -> None:
    assert not is_subset({"port": 80}, {"port": "80"})
    assert not is_subset({"enabled": True}, {"enabled": 1})


@pytest.mark.parametrize("want,have", [("0.5", "500m"), ("1024Mi", "1Gi"), (2147483648, "2Gi"), ("1", 1)])
def test_quantities_compare_by_value_inside_resources(want: object, have: object) -> None:
    assert is_subset({"resources": {"limits": {"memory": want}}}, {"resources": {"limits": {"memory": have}}})


def test_quantities_are_not_normalised_elsewhere() -> None:
    assert not is_subset({"image": "1Gi"}, {"image": "1024Mi"})


def test_parse_quantity() -> None:
    assert parse_quantity("250m") == Decimal("0.25")
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("abc") is None
    assert parse_quantity(True) is None
