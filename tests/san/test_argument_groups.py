"""Every argument group reads back every flag it adds: each flag, given alone with a value other
than its default, changes what the group reads. A flag added without its reading would fail here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runtime.options import BackendGroup, ThreadsGroup
from san.cli.arguments import (
    ArgumentGroup,
    CommandParser,
    DatasetGroup,
    DeviceGroup,
    LimitGroup,
    RerankGroup,
    RunGroup,
    existing_folder,
)
from san.cli.model_arguments import ModelGroup
from san.cli.train import TrainingGroup
from san.contract.device import Device
from san.contract.rules import RULES

#: A value other than the default for each flag of the groups below.
SAMPLES = {
    "--dataset": ["cuhk03"], "--root": ["{root}"], "--dataset-arg": ["split=3"],
    "--device": ["cuda:1"], "--workers": ["3"], "--json": [], "--no-progress": [], "--quiet": [],
    "--limit": ["int8.max_delta_map=7"], "--threshold": ["int8.max_delta_map=7"],
    "--rerank": [], "--k1": ["5"], "--k2": ["2"], "--lambda": ["0.5"],
    "--threads": ["2"], "--providers": ["cpu"], "--precision": ["bf16"], "--compile-cache": ["none"],
    "--backbone": ["resnet18"], "--attention": ["soft"], "--attention-stages": ["1,2"], "--no-context-unit": [],
    "--no-cross-feature": [], "--cu-upsample": ["nearest"], "--threshold-lambda": ["0.4"], "--power": ["3"],
    "--input-size": ["64x32"], "--stages": ["1", "2"], "--height": ["64"], "--width": ["32"],
    "--epochs": ["2"], "--batch-p": ["3"], "--batch-k": ["3"], "--lr": ["0.5"], "--mask-warmup": ["1"],
    "--mu": ["0.5"], "--soft-margin": [], "--seed": ["7"], "--eval-every": ["3"], "--pretrained": ["{file}"],
    "--amp": ["bf16"], "--resume": [],
}

#: Flags that only apply beside another: read against a parse of that other alone.
NEEDS = {"--k1": ["--rerank"], "--k2": ["--rerank"], "--lambda": ["--rerank"]}

GROUPS: list[ArgumentGroup] = [
    DatasetGroup(default="synthetic", root=existing_folder, root_help="data"),
    DeviceGroup("cpu"), RunGroup(workers=True, json=True, quiet_alias=True), LimitGroup("example"), RerankGroup(),
    BackendGroup(), ThreadsGroup(), ModelGroup("san-info", legacy_info=True), TrainingGroup(),
]


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [action.option_strings[0] for action in parser._actions if action.option_strings != ["-h", "--help"]]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: type(g).__name__)
def test_each_flag_a_group_adds_changes_what_it_reads(group: ArgumentGroup, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    parser = CommandParser(prog="test")
    group.add_to(parser)
    (tmp_path / "weights.pth").write_bytes(b"")
    flags = _flags(parser)
    assert flags and set(flags) <= set(SAMPLES), set(flags) - set(SAMPLES)
    for flag in flags:
        default = group.read(parser.parse_args(NEEDS.get(flag, [])))
        argv = [*NEEDS.get(flag, []), flag,
                *(value.format(root=tmp_path, file=tmp_path / "weights.pth") for value in SAMPLES[flag])]
        assert group.read(parser.parse_args(argv)) != default, f"{type(group).__name__} drops {flag}"
    capsys.readouterr()  # the deprecated spellings' notes


def test_re_ranking_parameters_without_rerank_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    parser = CommandParser(prog="test")
    RerankGroup().add_to(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--k1", "5"])
    assert capsys.readouterr().err == "test: error: --k1 only applies with --rerank; give --rerank, or leave --k1 out\n"


def test_the_groups_read_typed_values() -> None:
    parser = CommandParser(prog="test")
    run, device, limits = RunGroup(workers=True), DeviceGroup("auto"), LimitGroup("example")
    for group in (run, device, limits):
        group.add_to(parser)
    args = parser.parse_args(["--workers", "0", "--device", "CUDA:1", "--limit", "int8.max_delta_map=none"])
    assert run.read(args).workers == 0 and device.read(args) == Device("cuda", 1)
    assert limits.read(args)["int8"].max_delta_map is None and limits.read(args)["fp32"] == RULES["fp32"]
