"""san-info prints Table II's context-unit counts and sane FLOPs."""

from __future__ import annotations

import json

from san.cli.info import main


def test_table_ii_numbers_in_the_report(capsys) -> None:
    assert main(["--input-size", "64x32"]) == 0
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
    assert main(["--preset", "cpu-demo", "--input-size", "64x64", "--attention", "none", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)["config"]
    assert (changed["backbone"], changed["attention"], changed["spec"]["height"], changed["spec"]["width"]) == (
        "resnet18", "none", 64, 64)
    assert main(["--preset", "cpu-demo", "--height", "64", "--attention", "none", "--json"]) == 0  # the former spelling
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["spec"]["height"] == 64
    assert captured.err.strip() == ("san-info: note: --height is deprecated and will be removed in the next release; "
                                    "use --input-size HxW")
    assert main(["--preset", "cpu-demo"]) == 0
    out = capsys.readouterr().out
    assert "Table II way: this model's convolution weights only" in out and "for ResNet-50: 0.51, 2.03" in out


def test_every_variant_of_the_docs_is_described_and_contradictions_are_refused(capsys) -> None:
    """Table III's switches on the cpu-demo model; an option that cannot apply is refused in one line."""
    for argv in (["--attention", "soft"], ["--attention", "threshold", "--threshold-lambda", "0.4"],
                 ["--attention", "power", "--power", "3"], ["--no-context-unit"], ["--no-cross-feature"],
                 ["--attention-stages", "3,4"], ["--backbone", "resnet34"]):
        assert main(["--preset", "cpu-demo", *argv, "--json"]) == 0, argv
        report = json.loads(capsys.readouterr().out)
        assert report["flops_per_image"] > 0
    config = report["config"]
    assert config["backbone"] == "resnet34"
    for argv, message in ((["--attention", "none", "--attention-stages", "1"], "--attention none builds the plain ResNet"),
                          (["--attention", "soft", "--power", "3"], "--power sets the power variant's mask"),
                          (["--no-context-unit", "--cu-upsample", "nearest"], "the model has none"),
                          (["--input-size", "100x50"], "must be divisible by 32")):
        assert main(["--preset", "cpu-demo", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
