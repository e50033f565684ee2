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
