"""san-embed --ray on a local Ray: the local run's folder, bad files listed, kill + resume, no
processes left behind, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend
from runtime.embed import TASK_SIZE, read_index
from san.io.failpoints import ENV
from support.module_folders import ModuleFolders
from support.tiny import make_images

ray = pytest.importorskip("ray", reason="the cluster extra (ray[data]) is not installed")

pytestmark = pytest.mark.slow
SAN_EMBED = str(Path(sys.executable).with_name("san-embed"))
OPTIONS = EmbedOptions(batch_size=4, chunk_size=8)
FLAGS = ["--batch-size", "4", "--chunk-size", "8", "--no-progress"]
MARKER = "SAN_RAY_TEST_MARKER"


@pytest.fixture(scope="module")
def folder(module_tmp: ModuleFolders) -> Path:
    """40 good images, a text file named .jpg in the middle of a decode batch of good ones, and
    an empty file: the sorted names put ``b_bad.jpg`` between good files of one task."""
    root = module_tmp.mktemp("ray") / "images"
    good = make_images(root, 40, seed=4)
    for i, path in enumerate(good):
        path.rename(path.with_name(f"{'a' if i < 20 else 'c'}{path.name}"))
    (root / "b_bad.jpg").write_text("not an image")
    (root / "sub" / "zz_empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def local(tiny: Path, folder: Path, module_tmp: ModuleFolders) -> Path:
    out = module_tmp.mktemp("local") / "emb"
    with open_backend(tiny / "model.onnx") as backend:
        embed_folder(folder, backend, out, OPTIONS, runner=LocalRunner(0), progress=False)
    return out


def run_ray(tiny: Path, folder: Path, out: Path, *extra: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [SAN_EMBED, str(folder), "--model", str(tiny / "model.onnx"), "--out", str(out), *FLAGS, "--ray", *extra]
    return subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds ``marker`` (Ray passes it down)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def no_processes_left(marker: str, patience: float = 15.0) -> list[str]:
    """What still runs with ``marker`` once Ray has had ``patience`` seconds to tear down."""
    deadline = time.monotonic() + patience
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def assert_same_as_local(local: Path, out: Path) -> None:
    assert (out / "index.csv").read_bytes() == (local / "index.csv").read_bytes()  # every file, status, reason
    a, b = np.load(local / "embeddings.npy"), np.load(out / "embeddings.npy")
    assert a.shape == b.shape
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.99999
    meta_local, meta_ray = (json.loads((p / "meta.json").read_text()) for p in (local, out))
    assert {**meta_local, "runner": "ray"} == meta_ray


@pytest.mark.timeout(600)
def test_ray_run_writes_the_local_folder_and_leaves_nothing_running(tiny: Path, folder: Path, local: Path,
                                                                    tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    done = run_ray(tiny, folder, tmp_path / "emb", env={MARKER: marker})
    assert done.returncode == 1, done.stderr  # 1: some files failed, listed
    assert "2 file(s) failed" in done.stderr and "b_bad.jpg: cannot decode image" in done.stderr
    assert_same_as_local(local, tmp_path / "emb")
    index = {path: (status, error) for _, path, status, error in read_index(tmp_path / "emb" / "index.csv")}
    sorted_paths = sorted(index)
    bad = sorted_paths.index("b_bad.jpg")
    task = sorted_paths[bad // TASK_SIZE * TASK_SIZE : (bad // TASK_SIZE + 1) * TASK_SIZE]
    assert len(task) == TASK_SIZE and all(index[p][0] == "ok" for p in task if p != "b_bad.jpg")
    assert index["sub/zz_empty.png"] == ("error", "empty file (0 bytes)")
    assert json.loads((tmp_path / "emb" / "timing.json").read_text())["runner"] == "ray"
    assert no_processes_left(marker) == []


@pytest.mark.timeout(600)
def test_killed_ray_run_resumes_to_the_same_result(tiny: Path, folder: Path, local: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    killed = run_ray(tiny, folder, out, env={ENV: "embed.chunk_committed=2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # the driver, right after its second commit
    assert json.loads((out / "progress.json").read_text())["chunks_done"] == 2
    # The killed driver's local Ray stops through Ray's own fate-sharing, asynchronously (its
    # agents poll for their parent): not asserted here. The resumed run must leave nothing.
    marker = uuid.uuid4().hex
    resumed = run_ray(tiny, folder, out, "--resume", env={MARKER: marker})
    assert resumed.returncode == 1, resumed.stderr
    assert json.loads((out / "timing.json").read_text())["processed"] == 42 - 2 * 8  # only what was missing
    assert_same_as_local(local, out)
    assert no_processes_left(marker) == []


def test_decoding_runs_in_tasks_and_the_model_in_actors(tiny: Path, folder: Path, tmp_path: Path) -> None:
    script = f"""
import ray
from pathlib import Path
from runtime.embed import EmbedOptions
from runtime.embed_ray import ActorSpec, RayRunner
from san.contract.spec import InputSpec
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
runner = RayRunner(ActorSpec({str(tiny / "model.onnx")!r}))
runner.dataset(ray, Path({str(folder)!r}), ["a.png"], InputSpec(), EmbedOptions()).explain()
ray.shutdown()
"""
    plan = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    optimized = plan.stdout.split("Physical Plan (Optimized)")[1]
    assert "ActorPoolMapOperator[MapBatches(_EmbedActor)]" in optimized
    assert "TaskPoolMapOperator[MapBatches(_decode_batch)]" in optimized


def test_unreachable_address_fails_fast_with_one_line(tiny: Path, folder: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_ray(tiny, folder, tmp_path / "emb", "127.0.0.1:9", timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 30
    assert done.stderr.count("\n") == 1 and "--ray 127.0.0.1:9: cannot reach a Ray cluster there" in done.stderr
    assert not (tmp_path / "emb").exists()
