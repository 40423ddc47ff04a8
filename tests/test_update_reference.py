"""Bit identity of DistributionalPPO's update with the end states recorded at commit ded48df
(before the algorithm's code was restructured): parameters, optimizer state, update
statistics, return statistics, the RNG and the last rollout after a few rollouts and updates,
for the default options and for every option on (tests/update_reference.py)."""

from __future__ import annotations

import pytest
import torch as th
from pydantic import BaseModel

from tradingbot.algo.config import PPOConfig
from update_reference import CASES, DEFAULTS, load_reference, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_update_is_bit_identical_to_the_recorded_reference(name: str) -> None:
    expected = load_reference(name)
    actual = run_case(name)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert th.equal(actual[key], value), f"{name}: {key} differs from the reference"


def test_reference_config_writes_out_every_option() -> None:
    """A PPOConfig field missing from the written-out config would follow its default, and a
    changed default would then change the reference runs."""
    message = "write the new option out in tests/update_reference.py DEFAULTS (at the value that "
    message += "keeps the recorded runs)"
    defaults = PPOConfig()
    assert set(DEFAULTS) >= set(PPOConfig.model_fields), message
    for name in PPOConfig.model_fields:
        section = type(getattr(defaults, name))
        if isinstance(section, type) and issubclass(section, BaseModel):
            assert set(DEFAULTS[name]) >= set(section.model_fields), f"{name}: {message}"
