"""Checkpoints: bit-exact round trip, safe loading, clear errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from san import InputSpec, ModelConfig, build_model, load_checkpoint, save_checkpoint
from san.training.checkpoint import CheckpointError

SPEC = InputSpec(height=64, width=32, mask_threshold=0.55)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="resnet18", spec=SPEC))
    m.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m(torch.randint(0, 256, (4, 3, 64, 32), dtype=torch.uint8))
    return m.eval()


def test_round_trip_reproduces_eval_embeddings_bit_for_bit(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, training={"epoch": 3, "losses": [0.5, 0.4]})
    loaded, meta = load_checkpoint(path)
    x = torch.randint(0, 256, (3, 3, 64, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta.config == model.cfg
    assert meta.spec == SPEC
    assert meta.training == {"epoch": 3, "losses": [0.5, 0.4]}
    assert len(meta.sha256) == 64


def test_save_is_atomic_and_leaves_no_temp_files(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    def explode(*_args, **_kwargs):
        raise Boom

    original = torch.save
    torch.save = explode
    try:
        with pytest.raises(Boom):
            save_checkpoint(path, model, training={"epoch": 9})
    finally:
        torch.save = original
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "san-checkpoint", "version": 1, "payload": _Exploit()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError, match="evil|raw"):
        load_checkpoint(raw)


def test_truncated_file_gives_a_clear_error(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_missing_file_and_plain_state_dict(tmp_path, model) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a SAN checkpoint"):
        load_checkpoint(plain)


def test_checkpoint_for_another_architecture_names_mismatched_keys(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    # Same config claim, weights of a model without context units: keys go missing.
    other = build_model(ModelConfig(backbone="resnet18", context_unit=False, spec=SPEC))
    payload["state_dict"] = other.state_dict()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['attention\.1\.context"):
        load_checkpoint(path)


def test_junk_text_file_gives_a_clear_error(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)


def test_checkpoint_is_readable_by_others_like_any_new_file(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_header_reads_like_torch_load_without_torch_and_refuses_code(model, tmp_path) -> None:
    from san.contract.artifact import read_checkpoint_header

    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 3, 64, 32, dtype=torch.uint8)).sum().backward()
    optimizer.step()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, training={"epoch": 3, "optimizer": optimizer.state_dict()},
                    extra={"data": {"dataset": "synthetic", "root": "/data", "options": {"ids": 8}}})
    header = read_checkpoint_header(path)
    payload = torch.load(path, weights_only=True)
    assert set(header) == set(payload) - {"state_dict"}
    for key in ("format", "version", "config", "extra", "torch_version"):
        assert header[key] == payload[key]
    assert header["training"]["epoch"] == 3  # tensors (optimizer moments) come back as placeholders
    evil = tmp_path / "evil.pt"
    torch.save({"format": "san-checkpoint", "x": os.system}, evil)
    with pytest.raises(ValueError, match="refused: the file contains pickled code"):
        read_checkpoint_header(evil)


def test_a_zip_that_declares_more_than_a_checkpoint_may_is_refused_before_unpacking(tmp_path, monkeypatch) -> None:
    """Deflated zeros in PyTorch's zip layout that declare 4 times the limit unpacked (the limit
    lowered to 128 MiB, so that the bomb is made in a second)."""
    import zipfile

    from san.contract.artifact import read_checkpoint_header

    monkeypatch.setenv("SAN_MAX_CHECKPOINT_BYTES", str(2**27))

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", pickle.dumps({"format": "san-checkpoint"}))
        with archive.open("bomb/data/0", "w", force_zip64=True) as entry:
            zeros = bytes(2**26)
            for _ in range(4 * 2**27 // len(zeros)):
                entry.write(zeros)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"bomb.pt: refused: it declares 5368\d+ bytes unpacked, over the limit "
                                              r"of 134217728 \(san.contract.limits.MAX_CHECKPOINT_BYTES; SAN_MAX_CHECKPOINT_BYTES"):
        load_checkpoint(bomb)
    assert read_checkpoint_header(bomb)["format"] == "san-checkpoint"  # its record alone is small


def test_a_checkpoint_record_larger_than_the_limit_is_refused_without_torch(model, tmp_path, monkeypatch) -> None:
    from san.contract.artifact import read_checkpoint_header

    save_checkpoint(tmp_path / "model.pt", model)
    monkeypatch.setenv("SAN_MAX_CHECKPOINT_RECORD_BYTES", "100")
    with pytest.raises(ValueError, match=r"model.pt: refused: its record \S+/data.pkl declares \d+ bytes, over the "
                                         r"limit of 100 "):
        read_checkpoint_header(tmp_path / "model.pt")
