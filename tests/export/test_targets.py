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
from export.targets import TargetEntry

THROWAWAY = '''
"""A target that writes the verified ONNX file's sha256 and the contract's size into --throwaway DIR."""
import hashlib

from export.targets import ExportTarget, prepare_folder
from san.arguments import output_folder


class Throwaway(ExportTarget):
    flag = "throwaway"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--throwaway", type=output_folder, metavar="DIR")

    @classmethod
    def check_arguments(cls, args):
        if args.throwaway is not None:
            prepare_folder(args.throwaway, "--throwaway", args.overwrite, check_only=True)

    def write(self, job):
        folder = prepare_folder(job.args.throwaway, "--throwaway", job.args.overwrite)
        spec = job.meta.spec
        digest = hashlib.sha256(job.onnx.read_bytes()).hexdigest()
        (folder / "made.txt").write_text(f"{digest} {spec.height}x{spec.width}\\n")
        job.written["throwaway"] = folder / "made.txt"
        return 0
'''


def test_a_target_in_a_new_module_plus_one_row_exports(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "throwaway_target.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(export.targets.TARGETS, "throwaway", TargetEntry("throwaway_target", "Throwaway"))
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
