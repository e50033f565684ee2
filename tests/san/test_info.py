"""san-info prints Table II's context-unit counts and sane FLOPs."""

from __future__ import annotations

import json

from san.cli.info import main


def test_table_ii_numbers_in_the_report(capsys) -> None:
    assert main(["--height", "64", "--width", "32"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[2]: line.split()[-1] for line in out.splitlines() if line.startswith("context unit ")}
    assert rows == {"1": "0.51", "2": "2.03", "3": "8.13"}
    total = next(line for line in out.splitlines() if line.startswith("context units"))
    assert total.split()[-1] == "10.67"


def test_flops_of_the_resnet50_baseline(capsys) -> None:
    # torchvision's ResNet-50: 4.09 GMAC at 224x224, scaled to 256x128 is 2.67 GMAC = 5.34 GFLOP.
    assert main(["--attention", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["flops_per_image"] / 1e9 - 5.34) < 0.02


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad)]) == 2
    assert "x.pt" in capsys.readouterr().err


def test_a_preset_is_a_starting_point_that_options_change(capsys) -> None:
    """cpu-demo trains a ResNet-18 at 128x64; options change what they name; the line under the
    table says that the paper's figures are ResNet-50's."""
    assert main(["--preset", "cpu-demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["backbone"] == "resnet18"
    assert (report["config"]["spec"]["height"], report["config"]["spec"]["width"]) == (128, 64)
    assert main(["--preset", "cpu-demo", "--height", "64", "--attention", "none", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)["config"]
    assert (changed["backbone"], changed["attention"], changed["spec"]["height"], changed["spec"]["width"]) == (
        "resnet18", "none", 64, 64)
    assert main(["--preset", "cpu-demo"]) == 0
    out = capsys.readouterr().out
    assert "Table II way: this model's convolution weights only" in out and "for ResNet-50: 0.51, 2.03" in out
