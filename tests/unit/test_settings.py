"""Environment parsing of the settings every process reads."""

from __future__ import annotations

import pytest

from coretex.errors import ConfigError
from coretex.settings import load_settings


def test_kernel_threads_default_to_a_few_and_follow_the_environment() -> None:
    assert load_settings({}).kernel_threads == 4
    assert load_settings({"CORETEX_KERNEL_THREADS": "6"}).kernel_threads == 6


@pytest.mark.parametrize("raw", ["0", "-2", "many"])
def test_bad_numbers_are_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="CORETEX_KERNEL_THREADS"):
        load_settings({"CORETEX_KERNEL_THREADS": raw})
