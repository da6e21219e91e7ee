"""The names of the contract: one pattern builds a name and reads it back."""

from __future__ import annotations

import pytest

from diag import contract
from diag.contract import DIAG_LAYOUT, PAST, PRESENT, CacheNames, Layout


def test_name_functions():
    assert [contract.past_key_name(2), contract.past_value_name(2)] == [
        "past_key_values.2.key",
        "past_key_values.2.value",
    ]
    assert [contract.present_key_name(0), contract.present_value_name(11)] == [
        "present.0.key",
        "present.11.value",
    ]


@pytest.mark.parametrize("names", [PAST, PRESENT])
def test_parse_is_the_inverse_of_name(names):
    for layer in (0, 1, 9, 10, 123):
        for kind in names.kinds:
            assert names.parse(names.name(layer, kind)) == (layer, kind)


@pytest.mark.parametrize(
    "name",
    [
        "past_key_values.01.key",  # name() never writes a leading zero
        "past_key_values.-1.key",
        "past_key_values.1.keys",
        "past_key_values.1.query",
        "past_key_values.x.key",
        "past_key_values.1.key.extra",
        "xpast_key_values.1.key",
        "past_key_values_1_key",  # the dots are literal, not regex wildcards
        "present.1.key",
    ],
)
def test_parse_refuses(name):
    assert PAST.parse(name) is None


def test_another_template():
    """A pattern of other words (the shape of another exporter's names) works the same."""
    names = CacheNames("input.past_key_values.layers.{layer}.{kind}", kinds=("keys", "values"))
    assert names.names(1) == [
        "input.past_key_values.layers.0.keys",
        "input.past_key_values.layers.0.values",
    ]
    assert names.parse("input.past_key_values.layers.7.values") == (7, "values")
    assert names.parse("input.past_key_values.layers.7.value") is None
    assert names.patterns() == "input.past_key_values.layers.{i}.keys/values"
    kind_first = CacheNames("cache_{kind}_{layer}")
    assert kind_first.parse(kind_first.name(3, "value")) == (3, "value")
    assert kind_first.patterns() == "cache_key_{i} / cache_value_{i}"
    with pytest.raises(ValueError, match="unknown field"):
        CacheNames("past.{index}.{kind}").parse("past.0.key")


def test_diag_layout():
    assert isinstance(DIAG_LAYOUT, Layout)
    assert DIAG_LAYOUT.name == "diag"
    assert DIAG_LAYOUT.input_names(2) == [
        "input_ids",
        "attention_mask",
        "position_ids",
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
        "logits_to_keep",
    ]
    assert DIAG_LAYOUT.input_names(1, with_position_ids=False, with_logits_to_keep=False) == [
        "input_ids",
        "attention_mask",
        "past_key_values.0.key",
        "past_key_values.0.value",
    ]
    assert DIAG_LAYOUT.output_names(2) == [
        "logits",
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
    ]
    assert DIAG_LAYOUT.token_inputs == ("input_ids", "attention_mask", "position_ids", "logits_to_keep")


def test_positional_names_read_by_position():
    # a cache the exporter named after its nodes: each layer's key then its value
    names = contract.PositionalCacheNames(("cat_3", "cat_4", "cat_7", "cat_8"))
    assert [names.name(i, k) for i in range(2) for k in names.kinds] == list(names.listed)
    pairs = [(0, "key"), (0, "value"), (1, "key"), (1, "value")]
    assert [names.parse(n) for n in names.listed] == pairs
    assert names.parse("cat_5") is None
    assert names.names(1) == ["cat_3", "cat_4"]
    assert "by position" in names.patterns()
