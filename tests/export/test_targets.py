"""Adding an export target is one module plus one registry row: a throwaway target, written in a
temporary module, is exported through by ``san-export`` with no other file changed."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import pytest

import export.targets
from export.cli import main as san_export
from export.targets import ExportJob, SharedOptions, TargetEntry, write_targets, writing_order

THROWAWAY = '''
"""A target that writes the verified ONNX file's sha256 and the contract's size into --throwaway DIR."""
import hashlib
from dataclasses import dataclass
from pathlib import Path

from export.targets import FolderTarget, Written
from san.cli.arguments import output_folder


@dataclass(frozen=True)
class ThrowawayOptions:
    folder: Path


class Throwaway(FolderTarget[ThrowawayOptions]):
    name = "throwaway"
    option = "--throwaway"
    after = ("onnx", "tensorrt")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--throwaway", type=output_folder, metavar="DIR")

    @classmethod
    def options_from(cls, args):
        return ThrowawayOptions(args.throwaway) if args.throwaway is not None else None

    def write_into(self, job, options, folder):
        spec = job.meta.spec
        onnx = job.written["onnx"].main
        made = folder / "made.txt"
        made.write_text(f"{hashlib.sha256(onnx.read_bytes()).hexdigest()} {spec.height}x{spec.width}\\n")
        return Written(self.name, made, (made,))
'''


def test_a_target_in_a_new_module_plus_one_row_exports(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "throwaway_target.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.syspath_prepend(str(tmp_path))
    # the row goes first: the writing order comes from each target's ``after``, not from the table
    monkeypatch.setattr(export.targets, "TARGETS",
                        {"throwaway": TargetEntry("throwaway_target", "Throwaway"), **export.targets.TARGETS})
    order = writing_order({"throwaway", "triton", "tensorrt", "onnx"})
    assert order[0] == "onnx" and order.index("tensorrt") < min(order.index("triton"), order.index("throwaway"))
    onnx = tmp_path / "model.onnx"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(onnx), "--verify-count", "2"]
    assert san_export([*argv, "--throwaway", str(tmp_path / "made")]) == 0
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert (tmp_path / "made" / "made.txt").read_text() == f"{digest} 64x32\n"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        san_export(["--help"])
    assert "--throwaway DIR" in capsys.readouterr().out
    assert san_export([*argv, "--throwaway", str(tmp_path / "made")]) == 2  # the shared --overwrite guards it too
    assert "pass --overwrite" in capsys.readouterr().err
    sys.modules.pop("throwaway_target", None)


def test_targets_are_library_calls_with_typed_options_and_records(tiny: Path, tmp_path: Path) -> None:
    from export.target_boxmot import BoxMOTOptions
    from export.verify import synthetic_images
    from san.contract.rules import RULES
    from san.training.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny / "model.pt")
    job = ExportJob(model, meta, synthetic_images(meta.spec, 2), RULES, SharedOptions(onnx=tmp_path / "m.onnx"))
    written = write_targets(job, {"boxmot": BoxMOTOptions(tmp_path / "boxmot")})
    assert [w.target for w in written] == ["onnx", "boxmot"] and all(w.passed for w in written)
    assert written[0].main == tmp_path / "m.onnx" and written[0].main.is_file()
    assert {p.name for p in written[1].files} == {"san_reid.onnx", "san_reid.onnx.metadata.json"}
    assert all(p.is_file() for p in written[1].files) and job.written["boxmot"] == written[1]
