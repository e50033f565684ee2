"""The README's "One example, end to end", run as written after the demo with its output going
to a pipe, reads as a log: one line per epoch or stage, progress lines for long work
(san.io.progress) with no progress-bar frames (carriage returns), no third-party chatter from the
quantizer; and it leaves the demo's folder as it was.

The commands are read from README.md itself, so the test and the README cannot drift apart;
only sizes are added (one short epoch on a small synthetic set, a short progress interval, and
no retrieval limits for a split too small to resolve a one-point change), never another path
or step."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from san.io.progress import INTERVAL_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
#: What makes each command small enough for the suite: appended, never replacing a word of the README's.
SIZES = {
    "san-train": ["--epochs", "1", "--dataset-arg", "ids=20", "--dataset-arg", "height=64", "--dataset-arg",
                  "width=32", "--batch-p", "4", "--workers", "0", "--eval-every", "1"],
    "san-calibrate": ["--num", "16", "--batch-size", "4", "--limit", "int8.max_delta_map=none", "--limit",
                      "int8.max_delta_rank1=none"],
    "san-parity": ["--draws", "1", "--limit", "int8.max_delta_map=none", "--limit", "int8.max_delta_rank1=none"],
}
#: A progress line of san.io.progress: what, done/total, the share, the time taken (and left).
PROGRESS = re.compile(r"^(?P<what>[^:]+): (?P<done>\d+)/(?P<total>\d+)( \w+)? \(\d+%\), \d+:\d\d elapsed(, ~\d+:\d\d left)?$")


def readme_example() -> list[list[str]]:
    """The commands of the README's example block: continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## One example, end to end\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no 'One example, end to end' code block"
    joined = block[1].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def _run(argv: list[str], cwd: Path) -> tuple[list[str], dict[str, list[tuple[int, int]]]]:
    """A san-* command with stdout and stderr going to a pipe (not a terminal): its lines other than
    progress lines, and its progress lines as what -> [(done, total), ...] in order."""
    command = [str(Path(sys.executable).with_name(argv[0])), *argv[1:]]
    env = {**os.environ, INTERVAL_VARIABLE: "1e-6"}  # a line per step: the test's runs are short
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, (argv, done.stdout[-4000:])
    assert "\r" not in done.stdout, "progress-bar frames in a log"
    lines, progress = [], {}
    for line in done.stdout.splitlines():
        if match := PROGRESS.match(line):
            progress.setdefault(match["what"], []).append((int(match["done"]), int(match["total"])))
        else:
            lines.append(line)
    return lines, progress


def _finished(counts: list[tuple[int, int]]) -> bool:
    """Counts that never go back and end at their total."""
    return bool(counts) and counts[-1][0] == counts[-1][1] and [d for d, _ in counts] == sorted(d for d, _ in counts)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_example_reads_as_the_demo_s_steps_in_its_own_folder() -> None:
    commands = readme_example()
    assert [c[0] for c in commands] == ["san-train", "san-export", "san-calibrate", "san-embed", "san-parity"]
    paths = [word for command in commands for word in command if word.startswith("runs/")]
    assert paths and all(p.startswith("runs/example") for p in paths)  # never the demo's runs/demo


@pytest.mark.slow
def test_the_example_runs_as_written_after_the_demo_and_logs_its_stages_and_progress(tmp_path: Path) -> None:
    demo = tmp_path / "runs" / "demo"  # what the demo left: the example must not touch it
    demo.mkdir(parents=True)
    for name in ("model.pt", "model.onnx", "model.int8.onnx", "metrics.jsonl"):
        (demo / name).write_bytes(name.encode() * 100)
    before = _hashes(demo)
    logs = {command[0]: _run([*command, *SIZES.get(command[0], [])], tmp_path) for command in readme_example()}
    assert _hashes(demo) == before
    example = tmp_path / "runs" / "example"
    assert {"model.pt", "model.onnx", "model.int8.onnx", "query_embeddings"} <= {p.name for p in example.iterdir()}

    lines, progress = logs["san-train"]
    assert [line.split(":")[0] for line in lines if re.match(r"epoch \d+/1: loss", line)] == ["epoch 1/1"], lines
    assert _finished(progress["rendering"]) and _finished(progress["epoch 1/1"]), progress  # the set, the epoch
    assert len(progress["query"]) >= 2 and len(progress["gallery"]) >= 2, progress  # evaluations at epochs 0 and 1
    lines, progress = logs["san-calibrate"]
    text = "\n".join(lines)
    assert "Collecting tensor data" not in text and "pre-processing" not in text, text  # the quantizer's chatter
    assert _finished(progress["calibrating"]) and _finished(progress["query"]), progress  # and its report's
    lines, progress = logs["san-embed"]
    assert len(lines) == 1 and lines[0].startswith("embedded "), lines
    assert _finished(progress["embedding"]), progress
    lines, progress = logs["san-parity"]
    assert "torch, sampled masks: draw 1/1" in lines, lines
    assert sum(total == done for done, total in progress["gallery"]) == 4, progress  # torch, onnx, int8, the draw

    lines, progress = _run(["san-search", "build", "runs/example/query_embeddings", "--index", "flat"], tmp_path)
    assert _finished(progress["indexing"]) and lines[-1].startswith("built "), (lines, progress)
