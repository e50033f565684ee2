"""Interruptions: a run killed at any point resumes to the bytes of an uninterrupted run, and
whatever a kill leaves on disk is consistent (never a half-written file).

Two kinds of kill: a crash injected before every file-system step of an in-process run
(``os.replace``, ``os.fsync``, ``os.unlink``: every window between two durable writes),
and a real SIGKILL of the command-line program, after which no worker process may linger.
A disk that fills up at each durable write ends the command in one line, and ``--resume``
finishes the run once there is space again.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend
from san import load_checkpoint
from san.io.failpoints import ENV
from support.badfiles import make_bad_files
from support.embedding_runs import OPTIONS, reference_run
from support.module_folders import ModuleFolders
from support.tiny import make_images

FINAL = ("embeddings.npy", "index.csv", "meta.json")
CRASH_POINTS = ("replace", "fsync", "unlink")


class _Crash(BaseException):
    """Stands for SIGKILL: a BaseException, so no ``except Exception`` in the code under test catches it."""


def _killed(name: str, step: int) -> BaseException:
    return _Crash(f"killed before {name} (step {step})")


def _disk_full(name: str, step: int) -> BaseException:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@contextmanager
def crash_before_step(step: int, points: tuple[str, ...] = CRASH_POINTS,
                      error: Callable[[str, int], BaseException] = _killed) -> Iterator[list[str]]:
    """Raise ``error`` instead of the ``step``-th (1-based) file-system step among ``points``, and
    at every step after it (a killed process cleans nothing up, a full disk stays full); yields
    the steps taken. Removing a file that is already gone changes nothing on disk, so it is not
    a step."""
    taken: list[str] = []
    originals = {name: getattr(os, name) for name in points}

    def hook(name: str) -> Callable[..., object]:
        def step_or_crash(*args: object, **kwargs: object) -> object:
            if name != "unlink" or os.path.lexists(args[0]):  # type: ignore[arg-type]
                taken.append(name)
            if len(taken) >= step:
                raise error(name, step)
            return originals[name](*args, **kwargs)

        return step_or_crash

    for name in points:
        setattr(os, name, hook(name))
    try:
        yield taken
    finally:
        for name, original in originals.items():
            setattr(os, name, original)


def assert_consistent(out: Path, reference: Path) -> None:
    """What an interrupted run left in ``out`` agrees with the uninterrupted ``reference``.

    Every final file present is byte-identical to the reference's; while a run is pending,
    its committed rows and index lines are a prefix of the reference's.
    """
    for name in FINAL:
        if (out / name).exists():
            assert (out / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs"
    if not (out / "progress.json").exists():
        return
    state = json.loads((out / "progress.json").read_text())
    rows, index_bytes = state["rows"], state["index_bytes"]
    committed = np.load(out / "embeddings.partial.npy", mmap_mode="r")[:rows]
    assert committed.tobytes() == np.load(reference / "embeddings.npy")[:rows].tobytes()
    index = (out / "index.partial.csv").read_bytes()
    assert len(index) >= index_bytes
    assert (reference / "index.csv").read_bytes().startswith(index[:index_bytes])


@pytest.fixture(scope="module")
def images(module_tmp: ModuleFolders) -> Path:
    """Six valid images and two bad files (so index lines and embedding rows differ)."""
    root = module_tmp.mktemp("interrupt") / "images"
    make_images(root, 6, seed=3)
    (root / "empty.jpg").write_bytes(b"")
    (root / "sub" / "text.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def reference(tiny: Path, images: Path, module_tmp: ModuleFolders) -> Path:
    return reference_run(tiny / "model.onnx", images, module_tmp.mktemp("reference"))


def test_embed_killed_before_any_file_system_step_resumes_to_identical_bytes(
    tiny: Path, images: Path, reference: Path, tmp_path: Path
) -> None:
    with open_backend(tiny / "model.onnx") as backend:
        step = 0
        while True:
            step += 1
            out = tmp_path / f"step{step:03d}"
            try:
                with crash_before_step(step) as taken:
                    embed_folder(images, backend, out, OPTIONS, runner=LocalRunner(0), progress=False)
            except _Crash:
                assert_consistent(out, reference)
                embed_folder(images, backend, out, OPTIONS, runner=LocalRunner(0), resume=True, progress=False)
                for name in FINAL:
                    assert (out / name).read_bytes() == (reference / name).read_bytes(), (step, name)
                assert sorted(p.name for p in out.iterdir()) == sorted([*FINAL, "timing.json"]), step
                continue
            assert len(taken) == step - 1 >= 10  # ran to the end: every step was a crash point
            break


def test_san_embed_on_a_disk_that_fills_up_ends_in_one_line_and_resumes_to_identical_bytes(
    tiny: Path, images: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk fills at each durable write in turn (every ``fsync``: chunk commits, progress,
    the final files): one line naming a file in ``--out``, exit 2, what was committed kept."""
    from runtime.cli_embed import main as san_embed

    step = 0
    while True:
        step += 1
        out = tmp_path / f"step{step:03d}"
        argv = [str(images), "--model", str(tiny / "model.onnx"), "--out", str(out), "--workers", "0",
                "--batch-size", str(OPTIONS.batch_size), "--chunk-size", str(OPTIONS.chunk_size), "--no-progress"]
        with crash_before_step(step, ("fsync",), _disk_full) as taken:
            status = san_embed(argv)
        err = capsys.readouterr().err
        if len(taken) < step:  # the run ended before the disk filled
            assert step > 10
            break
        if status == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and f"{out}/" in lines[0] and "no space left on device" in lines[0], (step, err)
            assert_consistent(out, reference)
            assert san_embed([*argv, "--resume"]) == 1, step  # 1: the two bad files are listed
        else:  # only a folder's fsync, which is not needed for a file to be whole, found the disk full
            assert status == 1, (step, err)
        for name in ("embeddings.npy", "index.csv"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), (step, name)
        capsys.readouterr()


def _chunks_done(out: Path) -> int:
    try:
        return json.loads((out / "progress.json").read_text())["chunks_done"]
    except (OSError, ValueError, KeyError):
        return 0


def _survivors(group: int, grace: float = 10.0) -> bool:
    """Whether a process of the process group ``group`` is still alive after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_embed_sigkilled_twice_resumes_to_identical_bytes(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_images(images, 60, seed=4)
    make_bad_files(images / "bad")
    options = EmbedOptions(batch_size=4, chunk_size=8)
    reference = tmp_path / "reference"
    with open_backend(tiny / "model.onnx") as backend:
        embed_folder(images, backend, reference, options, runner=LocalRunner(0), progress=False)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "runtime.cli_embed", str(images), "--model", str(tiny / "model.onnx"),
               "--out", str(out), "--batch-size", "4", "--chunk-size", "8", "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # a desktop locale, not C.UTF-8's lenient one
    for kill_after, commits in ((2, 2), (6, 4)):  # the resumed run commits 4 more chunks, then dies
        log = tmp_path / f"stderr-{kill_after}.txt"  # a file: decode workers may hold a pipe open after the kill
        with open(log, "wb") as stderr:
            run = subprocess.Popen(command + (["--resume"] if kill_after > 2 else []),
                                   env={**env, ENV: f"embed.chunk_committed={commits}"}, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        assert run.wait(timeout=120) == -signal.SIGKILL, log.read_text(errors="replace")  # the main process only
        lingering = _survivors(run.pid)
        if lingering:
            os.killpg(run.pid, signal.SIGKILL)
        assert not lingering, "decode workers outlived the killed san-embed"
        assert _chunks_done(out) == kill_after and not (out / "meta.json").exists()
        assert_consistent(out, reference)
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # 1: some files failed, each listed
    assert "Traceback" not in done.stderr and "file(s) failed" in done.stderr
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_second_san_embed_on_one_output_is_refused_while_the_first_writes(tiny: Path, images: Path,
                                                                             reference: Path, tmp_path: Path) -> None:
    """The first run stops itself after its first committed chunk, holding the output; a second
    run and a --resume on the same output are refused, naming it; the first then finishes with
    the bytes a lone run writes."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "runtime.cli_embed", str(images), "--model", str(tiny / "model.onnx"),
               "--out", str(out), "--batch-size", "3", "--chunk-size", "4", "--workers", "0", "--no-progress"]
    first = subprocess.Popen(command, env={**os.environ, ENV: "embed.chunk_committed=1:stop"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(first.pid):  # a known point: the first chunk is committed, the lock held
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.05)
        held = {p.name: p.read_bytes() for p in out.iterdir()}
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = subprocess.run(command + extra, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
            assert second.stderr.startswith(f"san-embed: error: {out}: cannot write there: another run is writing "
                                            f"it (pid {first.pid}: "), second.stderr
            assert {p.name: p.read_bytes() for p in out.iterdir()} == held
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 1, first.stderr.read() if first.stderr else ""  # 1: the bad files, listed
    assert sorted(p.name for p in out.iterdir()) == sorted(FINAL) + ["timing.json"]
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=120)
    assert again.returncode in (0, 1) and "already" in again.stdout + again.stderr, again.stdout + again.stderr


@pytest.mark.parametrize("command", ["export", "calibrate"])
def test_a_temporary_a_killed_write_leaves_is_removed_and_reported_by_the_next_run(command: str, tiny: Path,
                                                                                  tmp_path: Path) -> None:
    """Killed just before the rename of its atomic write, the run leaves a temporary of the model's
    size beside the output and no output; the next run removes it, says so, and writes the output."""
    out = tmp_path / "model.out.onnx"
    argv = {"export": ["-m", "export.cli", "--ckpt", str(tiny / "model.pt"), "--out", str(out)],
            "calibrate": ["-m", "calibration.cli", "--onnx", str(tiny / "model.onnx"), "--images",
                          str(tiny / "images"), "--out", str(out), "--no-progress"]}[command]
    killed = subprocess.run([sys.executable, *argv], env={**os.environ, ENV: "atomic.before_replace=1"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].startswith(".model.out.onnx.") and left[0].endswith(".tmp"), left
    assert (tmp_path / left[0]).stat().st_size > 1_000_000  # the model's weights, not a stub
    again = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"removed 1 temporary file(s) an interrupted run left beside {out}: {left[0]}" in again.stdout
    assert not (tmp_path / left[0]).exists() and out.is_file()


TIMING_KEYS = ("img_per_s", "seconds")


def _metrics(run: Path) -> list[dict[str, object]]:
    """metrics.jsonl without the wall-clock fields."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.fixture(scope="module")
def market_with_bad_files(module_tmp: ModuleFolders) -> Path:
    """A small synthetic Market-1501 layout whose training split also links to every refused kind."""
    from san.data.synth import ensure_synthetic

    root = module_tmp.mktemp("train") / "market"
    ensure_synthetic(root, ids=12, cameras=3, height=128, width=64)
    bad_root = root.parent / "bad"
    refused = [c for c in make_bad_files(bad_root) if c.outcome == "error"]
    for i, case in enumerate(refused):
        name = f"{1 + i % 6:04d}_c{1 + i % 3}s9_{900000 + i:06d}_00.jpg"
        (root / "bounding_box_train" / name).symlink_to(bad_root / case.path)
    return root


def _train_command(out: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "san.cli.train", "--preset", "cpu-demo", "--dataset", "market1501",
            "--root", str(root), "--out", str(out), "--epochs", "3", "--batch-p", "3", "--batch-k", "2",
            "--workers", "1", "--eval-every", "0", "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_train_sigkilled_resumes_the_same_loss_sequence(market_with_bad_files: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict"}
    whole = subprocess.run(_train_command(tmp_path / "whole", market_with_bad_files), env=env,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert "warning: skipping unreadable training image" in whole.stdout

    out = tmp_path / "killed"
    log = tmp_path / "stderr.txt"  # a file: loader workers may hold a pipe open after the kill
    with open(log, "wb") as stderr:
        run = subprocess.Popen(_train_command(out, market_with_bad_files), env={**env, ENV: "train.epoch_saved=1"},
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    assert run.wait(timeout=600) == -signal.SIGKILL, log.read_text(errors="replace")  # right after epoch 1 was saved
    lingering = _survivors(run.pid)
    if lingering:
        os.killpg(run.pid, signal.SIGKILL)
    assert not lingering, "data-loader workers outlived the killed san-train"
    _, meta = load_checkpoint(out / "last.pt")  # never half-written
    assert meta.training["epoch"] == 1 and not (out / "model.pt").exists()
    done = meta.training["epoch"]
    assert [row["epoch"] for row in _metrics(out)][:done] == list(range(1, done + 1))  # every saved epoch logged

    # What a kill at other instants leaves: a metrics line torn mid-append, a checkpoint temporary.
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(f'{{"epoch": {done + 1}, "loss": 0.12')
    (out / ".last.pt.k1ll3d00.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    resumed = subprocess.run(_train_command(out, market_with_bad_files, "--resume"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(out) == _metrics(tmp_path / "whole")
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.jsonl", "model.pt"]
    a, _ = load_checkpoint(out / "model.pt")
    b, _ = load_checkpoint(tmp_path / "whole" / "model.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


#: Folder targets (DeepStream writes through the same FolderTarget.write, at twice the export cost).
FOLDER_TARGETS = {"openvino": "--openvino", "triton": "--triton", "boxmot": "--boxmot"}


def test_san_export_killed_during_its_multi_file_writes_leaves_each_folder_old_or_new(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed (SIGKILL at a named point) while the second folder target moves into place, its old
    output moved aside, after the first one moved in and before the others start: the first
    folder is the new output whole, the second none, the rest their old outputs; nothing
    half-written (every point of the move: tests/san/test_staged_folder.py). Taking the second
    folder's lock, as the next export to it does first, removes what the kill left and says so."""
    from export.targets import writing_order
    from san.io.output_lock import exclusive_output

    first, second, *rest = [name for name in writing_order(set(FOLDER_TARGETS) | {"onnx"}) if name in FOLDER_TARGETS]
    old = {}
    for name in FOLDER_TARGETS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "old.txt").write_text(f"an earlier {name} export")
        old[name] = {"old.txt": (tmp_path / name / "old.txt").read_bytes()}
    argv = [sys.executable, "-m", "export.cli", "--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx"),
            "--verify-count", "2", "--overwrite"]
    targets = [arg for name, option in FOLDER_TARGETS.items() for arg in (option, str(tmp_path / name))]

    def contents(name: str) -> dict[str, bytes]:
        folder = tmp_path / name
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} \
            if folder.exists() else {}

    killed = subprocess.run([*argv, *targets], env={**os.environ, ENV: "atomic.folder_moved_aside=2"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "old.txt" not in contents(first) and len(contents(first)) >= 2  # the new output, whole
    assert contents(second) == {}
    assert all(contents(name) == old[name] for name in rest)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{second}."))
    assert len(leftovers) == 2 and all(name.endswith(".tmp") for name in leftovers), leftovers  # old + new
    capsys.readouterr()
    with exclusive_output(tmp_path / second):
        pass  # what the next export to that folder does first, before it writes (tests/san/test_staged_folder.py)
    assert f"an interrupted run left beside {tmp_path / second}: {', '.join(leftovers)}" in capsys.readouterr().out
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
