"""Fixtures of the export tests."""

from __future__ import annotations

import sys

import pytest

from support.fake_tensorrt import Behaviour, module


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Behaviour:
    """Install a fake ``tensorrt`` module; yield its Behaviour to steer and inspect."""
    behaviour = Behaviour()
    monkeypatch.setitem(sys.modules, "tensorrt", module(behaviour))
    return behaviour
