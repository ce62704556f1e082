"""The one ``--set KEY=VALUE`` reader shared by the commands (official import, benchmark suite)."""

import pytest

from pretrain.config import parse_setting


@pytest.mark.parametrize("item, expected", [
    ("lr=1e-3", ("lr", 1e-3)), ("steps=4", ("steps", 4)), ("translate=false", ("translate", False)),
    ("mlp_t=True", ("mlp_t", True)), ("steps=none", ("steps", None)), ("pos_encodings=rope", ("pos_encodings", "rope")),
    ("model_overrides={\"T\": 4}", ("model_overrides", {"T": 4})), (" H_cycles = 4 ", ("H_cycles", 4)),
])
def test_values_are_read_as_json_with_words_for_none_and_booleans(item, expected):
    assert parse_setting(item) == expected


@pytest.mark.parametrize("item", ["lr", "=3", ""])
def test_an_item_without_a_key_and_value_is_refused(item):
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_setting(item)
