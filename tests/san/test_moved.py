"""The modules' former names (before ``san``'s sub-packages) still import, for one release: the
module at its new home, and a ``DeprecationWarning`` naming it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from san.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_former_name_is_the_module_at_its_new_home(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_from_imports_of_former_names_work_in_a_fresh_process() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "from san.contract.spec import InputSpec\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "from san.spec import InputSpec as Former; from san.arguments import count\n"
            "assert Former is InputSpec and count(1)('3') == 3; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
