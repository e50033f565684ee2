"""The README's "One example, end to end" runs as written, after the demo, in a folder of its own.

The commands are read from README.md itself, so the test and the README cannot drift apart;
only sizes are added (one short epoch on a small synthetic set, and no retrieval limits for a
split too small to resolve a one-point change), never another path or step."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What makes each command small enough for the suite: appended, never replacing a word of the README's.
SIZES = {
    "san-train": ["--epochs", "1", "--dataset-arg", "ids=24", "--dataset-arg", "height=64", "--dataset-arg",
                  "width=32", "--batch-p", "4", "--workers", "0", "--eval-every", "0"],
    "san-calibrate": ["--num", "16", "--batch-size", "4", "--limit", "int8.max_delta_map=none", "--limit",
                      "int8.max_delta_rank1=none"],
    "san-parity": ["--draws", "1", "--limit", "int8.max_delta_map=none", "--limit", "int8.max_delta_rank1=none"],
}


def readme_example() -> list[list[str]]:
    """The commands of the README's example block: continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## One example, end to end\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no 'One example, end to end' code block"
    joined = block[1].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_example_reads_as_the_demo_s_steps_in_its_own_folder() -> None:
    commands = readme_example()
    assert [c[0] for c in commands] == ["san-train", "san-export", "san-calibrate", "san-embed", "san-parity"]
    paths = [word for command in commands for word in command if word.startswith("runs/")]
    assert paths and all(p.startswith("runs/example") for p in paths)  # never the demo's runs/demo


@pytest.mark.slow
def test_the_example_runs_as_written_after_the_demo(tmp_path: Path) -> None:
    demo = tmp_path / "runs" / "demo"  # what the demo left: the example must not touch it
    demo.mkdir(parents=True)
    for name in ("model.pt", "model.onnx", "model.int8.onnx", "metrics.jsonl"):
        (demo / name).write_bytes(name.encode() * 100)
    before = _hashes(demo)
    for command in readme_example():
        program = Path(sys.executable).with_name(command[0])
        done = subprocess.run([str(program), *command[1:], *SIZES.get(command[0], [])], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    example = tmp_path / "runs" / "example"
    assert {"model.pt", "model.onnx", "model.int8.onnx", "query_embeddings"} <= {p.name for p in example.iterdir()}
    assert _hashes(demo) == before
