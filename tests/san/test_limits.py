"""The size limits: an integer in range passes, anything else is refused naming the field; the
address-space bound makes an allocation beyond it fail inside its block and nowhere else."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from san.limits import LimitError, address_space_at_most, check_size


@pytest.mark.parametrize("value, message", [(0, "must lie in 1..8, got 0"), (9, "must lie in 1..8, got 9"),
                                            (True, "must be an integer, got True"), ("4", "must be an integer, got '4'"),
                                            (4.0, "must be an integer, got 4.0")])
def test_a_size_outside_its_limit_or_not_an_integer_is_refused_naming_the_field(value: object, message: str) -> None:
    assert check_size(8, 8, "f") == 8
    with pytest.raises(LimitError, match=f"^height {message}$"):
        check_size(value, 8, "height")


def test_an_allocation_beyond_the_bound_fails_inside_the_block_and_the_limit_comes_back() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with address_space_at_most(256 * 2**20):
        small = np.ones(2**20, np.uint8)  # 1 MiB: inside the bound
        with pytest.raises(MemoryError):
            np.ones(2**30, np.uint8)  # 1 GiB: beyond it
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert np.ones(2**30, np.uint8)[-1] == 1 and small.sum() == 2**20
