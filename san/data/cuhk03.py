"""CUHK03 from the release's ``cuhk-03.mat`` (MATLAB v7.3, i.e. HDF5, read with h5py).

The mat file holds ``labeled`` and ``detected``: one cell per camera pair (5), each a
persons x 10 cell matrix of images (columns 1-5 camera A, 6-10 camera B; missing images
are empty cells), and ``testsets``: 20 cells of N x 2 (pair, person) 1-based indices.
Images are extracted once to ``<root>/images_{variant}/{pair}_{person:03d}_{cam}_{idx:02d}.png``
(the names the new-protocol configs list); a ``.complete`` marker makes the cache reusable.

Protocols:

* ``classic``, ``split`` 0..19: test ids are ``testsets[split]``; of the other ids (sorted
  by (pair, person)) the last ``num_val`` (100) go to ``extra["val"]`` and the rest train
  (1,367 = 1,267 + 100). Query and gallery both hold every test image (camid 0/1 for
  camera A/B); evaluate with :func:`san.evaluation.metrics.cuhk03_single_shot`. Query, gallery and
  val pids are 1-based positions of (pair, person) in sorted order.
* ``new`` (767 train / 700 test ids): ``cuhk03_new_protocol_config_{variant}.mat`` (a
  MATLAB v5 file, read by the small reader below) lists files, labels and 1-based
  ``train_idx``/``query_idx``/``gallery_idx``; query/gallery keep its labels.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from san.contract.limits import exceeds, limit
from san.data.layout import locate, relabel, report
from san.data.records import ImageRecord, ReidDataset

VARIANTS = ("labeled", "detected")
PROTOCOLS = ("classic", "new")
MAT_NAME = "cuhk-03.mat"
RELEASE_DIR = "cuhk03_release"
IMAGES_PER_PERSON = 10  # columns 1-5: camera A, 6-10: camera B
IMAGE_NAME = re.compile(r"(\d+)_(\d{3})_([12])_(\d{2})\.png")  # pair, person, camera, index
COMPLETE_MARKER = ".complete"
NEW_PROTOCOL_KEYS = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")

Identity = tuple[int, int]  # (camera pair, person), both 1-based


def cuhk03(
    root: str | Path,
    variant: str = "labeled",
    protocol: str = "classic",
    split: int = 0,
    num_val: int = 100,
    verbose: bool = True,
) -> ReidDataset:
    """CUHK03 ``variant`` (labeled/detected) under ``protocol`` (classic/new); see module doc."""
    if variant not in VARIANTS or protocol not in PROTOCOLS:
        raise ValueError(
            f"expected variant in {VARIANTS} and protocol in {PROTOCOLS}, "
            f"got variant={variant!r}, protocol={protocol!r}"
        )
    if protocol == "new" and split != 0:
        raise ValueError(f"the new CUHK03 protocol has a single split (0), got split={split}")
    root = Path(root).expanduser().resolve()
    image_dir = _extract_images(root, variant)
    if protocol == "classic":
        return report(_classic(root, image_dir, variant, split, num_val), verbose)
    return report(_new_protocol(root, image_dir, variant), verbose)


def _mat_path(root: Path) -> Path:
    base = locate(root, RELEASE_DIR, MAT_NAME)
    if base is None:
        raise FileNotFoundError(
            f"expected {root / MAT_NAME} (or {root / RELEASE_DIR / MAT_NAME}): the CUHK03 "
            "release's MATLAB v7.3 file with 'labeled', 'detected' and 'testsets'"
        )
    return base / MAT_NAME


def _open_mat(root: Path, key: str) -> h5py.File:
    """The release mat file, checked to be HDF5 and to hold ``key``."""
    path = _mat_path(root)
    if not h5py.is_hdf5(path):
        raise ValueError(f"expected {path} to be a MATLAB v7.3 (HDF5) file, as released")
    mat = h5py.File(path, "r")
    if key not in mat:
        mat.close()
        raise ValueError(f"expected a '{key}' cell array in {path}, found {sorted(mat)}")
    return mat


def _read(mat: h5py.File, key: str | h5py.Reference, where: str) -> np.ndarray:
    """The dataset ``key`` of ``mat``, read only when its size is within
    :data:`san.contract.limits.MAX_MAT_DATASET_BYTES` (a compressed dataset of a few KB can declare gigabytes)."""
    dataset = mat[key]
    size = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize
    if over := exceeds(size, "MAX_MAT_DATASET_BYTES"):
        raise ValueError(f"{where}: dataset {dataset.name} of shape {dataset.shape} holds {size} bytes, {over}")
    return dataset[()]


def _extract_images(root: Path, variant: str) -> Path:
    """Write every image of ``variant`` to ``<root>/images_{variant}/`` unless already done."""
    image_dir = root / f"images_{variant}"
    if (image_dir / COMPLETE_MARKER).is_file():
        return image_dir
    image_dir.mkdir(exist_ok=True)
    with _open_mat(root, variant) as mat:
        for pair, pair_ref in enumerate(_read(mat, variant, mat.filename).ravel(), start=1):
            cells = _read(mat, pair_ref, mat.filename).T  # (persons, 10) object references
            for person, row in enumerate(cells, start=1):
                for idx, image_ref in enumerate(row, start=1):
                    image = _read(mat, image_ref, mat.filename)  # (3, W, H): HDF5 is column-major
                    if image.ndim == 3 and image.size:  # empty cells: 0-size or [0, 0]
                        cam = 1 if idx <= IMAGES_PER_PERSON // 2 else 2
                        name = f"{pair}_{person:03d}_{cam}_{idx:02d}.png"
                        Image.fromarray(np.ascontiguousarray(image.T)).save(image_dir / name)
    (image_dir / COMPLETE_MARKER).touch()
    return image_dir


def _cached_images(image_dir: Path) -> dict[Identity, list[tuple[str, int]]]:
    """(path, camid) of each extracted image, grouped by identity, in name order."""
    images: dict[Identity, list[tuple[str, int]]] = {}
    for path in sorted(image_dir.glob("*.png")):
        match = IMAGE_NAME.fullmatch(path.name)
        if match:
            identity = (int(match[1]), int(match[2]))
            images.setdefault(identity, []).append((str(path), int(match[3]) - 1))
    return images


def _testset(root: Path, split: int) -> set[Identity]:
    with _open_mat(root, "testsets") as mat:
        refs = _read(mat, "testsets", mat.filename).ravel()
        if not 0 <= split < len(refs):
            raise ValueError(f"expected a classic split in 0..{len(refs) - 1}, got {split}")
        pairs_persons = _read(mat, refs[split], mat.filename).T.astype(int)  # (N, 2) 1-based
    return {(pair, person) for pair, person in pairs_persons}


def _classic(root: Path, image_dir: Path, variant: str, split: int, num_val: int) -> ReidDataset:
    images = _cached_images(image_dir)
    identities = sorted(images)
    pid_of = {identity: pid for pid, identity in enumerate(identities, start=1)}
    test_ids = _testset(root, split)
    if not test_ids <= images.keys():
        raise ValueError(f"testsets[{split}] names identities with no image in {image_dir}/")
    rest = [identity for identity in identities if identity not in test_ids]
    if len(rest) <= num_val:
        raise ValueError(f"only {len(rest)} non-test identities, cannot hold out {num_val} for val")

    def records(ids: list[Identity]) -> tuple[ImageRecord, ...]:
        return tuple(ImageRecord(p, pid_of[i], cam) for i in ids for p, cam in images[i])

    test = records(sorted(test_ids))
    return ReidDataset(
        f"cuhk03 {variant} classic split {split}",
        relabel(records(rest[: len(rest) - num_val])),
        test,
        test,
        extra={"val": records(rest[len(rest) - num_val :])},
        single_shot=True,
    )


def _new_protocol(root: Path, image_dir: Path, variant: str) -> ReidDataset:
    config_path = root / f"cuhk03_new_protocol_config_{variant}.mat"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"expected {config_path} (the 767/700 protocol config) with {NEW_PROTOCOL_KEYS}"
        )
    config = _read_mat_v5(config_path, NEW_PROTOCOL_KEYS)
    missing_keys = set(NEW_PROTOCOL_KEYS) - config.keys()
    if missing_keys:
        raise ValueError(f"expected {config_path} to hold {sorted(missing_keys)}")
    filelist = [str(name) for name in config["filelist"].ravel()]
    labels = config["labels"].ravel().astype(int)
    missing = [name for name in filelist if not (image_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} files listed in {config_path} are not in {image_dir}/ "
            f"(e.g. {missing[0]}); is the config for the '{variant}' images?"
        )

    def records(key: str) -> tuple[ImageRecord, ...]:
        return tuple(
            ImageRecord(str(image_dir / filelist[i]), int(labels[i]), _camid(filelist[i]))
            for i in config[key].ravel().astype(int) - 1
        )

    return ReidDataset(
        f"cuhk03 {variant} new protocol",
        relabel(records("train_idx")),
        records("query_idx"),
        records("gallery_idx"),
    )


def _camid(name: str) -> int:
    match = IMAGE_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"expected config file names like 1_001_1_01.png, got {name!r}")
    return int(match[3]) - 1


# --- a minimal MATLAB v5 MAT-file reader: numeric arrays, char row vectors, cell arrays ---

# data type -> NumPy dtype; miUTF8 (16) holds ASCII file names byte for byte
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8", 16: "u1"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_CELL, _MX_CHAR, _MX_NUMERIC = 1, 4, range(6, 16)


def _read_mat_v5(path: Path, keys: Collection[str]) -> dict[str, Any]:
    """The variables named in ``keys`` of a MATLAB v5 MAT-file (what ``scipy.io.loadmat`` reads)."""
    if over := exceeds(path.stat().st_size, "MAX_MAT_VARIABLE_BYTES"):
        raise ValueError(f"{path}: a protocol file of {path.stat().st_size} bytes, {over}")
    data = path.read_bytes()
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if endian is None or struct.unpack_from(endian + "H", data, 124)[0] != 0x0100:
        raise ValueError(f"expected {path} to be a MATLAB v5 MAT-file")
    variables = {}
    for mtype, payload in _mat_elements(data[128:], endian):
        if mtype == _MI_COMPRESSED:
            mtype, payload = next(_mat_elements(_inflate(payload, path), endian))
        name = _matrix_parts(payload, endian)[2] if mtype == _MI_MATRIX else None
        if name is not None and name in keys:
            variables[name] = _matrix_value(payload, endian)
    return variables


def _inflate(payload: bytes, path: Path) -> bytes:
    """A compressed element's bytes, decompressed no further than :data:`san.contract.limits.MAX_MAT_VARIABLE_BYTES`."""
    inflater = zlib.decompressobj()
    largest = limit("MAX_MAT_VARIABLE_BYTES")
    try:
        data = inflater.decompress(payload, largest + 1)
    except zlib.error as exc:
        raise ValueError(f"{path}: a compressed variable is damaged ({exc})") from None
    if over := exceeds(len(data), "MAX_MAT_VARIABLE_BYTES"):
        raise ValueError(f"{path}: a compressed variable expands beyond {largest} bytes, {over}")
    return data


def _mat_elements(buf: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    """(data type, payload) of each tagged element in ``buf``."""
    pos = 0
    while pos + 8 <= len(buf):
        word, size = struct.unpack_from(endian + "II", buf, pos)
        if word >> 16:  # small element: size in the upper half-word, data in the next 4 bytes
            yield word & 0xFFFF, buf[pos + 4 : pos + 4 + (word >> 16)]
            pos += 8
        else:  # data padded to 8 bytes, except top-level compressed elements
            yield word, buf[pos + 8 : pos + 8 + size]
            pos += 8 + size + (0 if word == _MI_COMPRESSED else -size % 8)


def _matrix_parts(payload: bytes, endian: str) -> tuple[int, tuple[int, ...], str, list]:
    """(array class, dimensions, name, data elements) of one miMATRIX payload."""
    flags, dims, name, *data = _mat_elements(payload, endian)
    array_class = struct.unpack_from(endian + "I", flags[1])[0] & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(dims[1], endian + "i4"))
    return array_class, shape, name[1].decode("ascii"), data


def _matrix_value(payload: bytes, endian: str) -> Any:
    """A cell array as an object ndarray, a char row as str, a numeric array as ndarray."""
    array_class, shape, name, data = _matrix_parts(payload, endian)
    if array_class == _MX_CELL:
        cells = np.empty(len(data), dtype=object)
        for i, (_, cell) in enumerate(data):
            cells[i] = _matrix_value(cell, endian)
        return cells.reshape(shape, order="F")
    if array_class != _MX_CHAR and array_class not in _MX_NUMERIC:
        raise ValueError(f"MATLAB class {array_class} of {name!r} is not supported")
    mtype, real = data[0]
    values = np.frombuffer(real, endian + _MI_DTYPES[mtype])
    if array_class == _MX_CHAR:
        return "".join(map(chr, values))
    return values.reshape(shape, order="F")
