"""The size limits: an integer in range passes, anything else is refused naming the field; the
address-space bound makes an allocation beyond it fail inside its block and nowhere else."""

from __future__ import annotations

import re
import resource

import numpy as np
import pytest

from san.contract.limits import LimitError, address_space_at_most, check_overrides, check_size, limit


@pytest.mark.parametrize("value, message", [(0, "must be at least 1, got 0"),
                                            (9, "9 is over the limit of 8 (san.contract.limits.MAX_IMAGE_SIDE; "
                                                "SAN_MAX_IMAGE_SIDE raises it)"),
                                            (True, "must be an integer, got True"), ("4", "must be an integer, got '4'"),
                                            (4.0, "must be an integer, got 4.0")])
def test_a_size_outside_its_limit_or_not_an_integer_is_refused_naming_the_field(
        value: object, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAN_MAX_IMAGE_SIDE", "8")
    assert check_size(8, "MAX_IMAGE_SIDE", "f") == 8
    with pytest.raises(LimitError, match=f"^height {re.escape(message)}$"):
        check_size(value, "MAX_IMAGE_SIDE", "height")


def test_an_allocation_beyond_the_bound_fails_inside_the_block_and_the_limit_comes_back() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with address_space_at_most(256 * 2**20):
        small = np.ones(2**20, np.uint8)  # 1 MiB: inside the bound
        with pytest.raises(MemoryError):
            np.ones(2**30, np.uint8)  # 1 GiB: beyond it
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert np.ones(2**30, np.uint8)[-1] == 1 and small.sum() == 2**20


def test_a_variable_raises_a_limit_and_a_bad_one_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limit("MAX_CHECKPOINT_BYTES") == 4 * 2**30
    monkeypatch.setenv("SAN_MAX_CHECKPOINT_BYTES", str(8 * 2**30))
    assert limit("MAX_CHECKPOINT_BYTES") == 8 * 2**30
    check_overrides()
    for variable, text, message in (("SAN_MAX_CHECKPOINT_BYTES", "8G", "SAN_MAX_CHECKPOINT_BYTES='8G': expected a whole "
                                     "number >= 1 (default 4294967296)"),
                                    ("SAN_MAX_IMAGE_SIDE", "0", "SAN_MAX_IMAGE_SIDE='0': expected a whole number"),
                                    ("SAN_MAX_PIXELS", "10", "SAN_MAX_PIXELS: not a limit; the limits are SAN_MAX_IMAGE_SIDE, ")):
        with monkeypatch.context() as scoped:
            scoped.setenv(variable, text)
            with pytest.raises(LimitError, match=re.escape(message)):
                check_overrides()


def test_a_command_refuses_a_bad_limit_variable_in_one_line_before_any_work(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from runtime.cli_search import main

    monkeypatch.setenv("SAN_MAX_EMBEDDING_DIM", "lots")
    assert main(["build", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("san-search: error: SAN_MAX_EMBEDDING_DIM='lots': expected a whole number >= 1 "
                                       "(default 16384)\n")
