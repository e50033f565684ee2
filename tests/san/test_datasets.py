"""On-disk loaders against miniature trees in the real layouts (real names, real JPEG/HDF5/MAT)."""

from __future__ import annotations

import io
import itertools
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from san.data.cuhk03 import cuhk03
from san.data.folder import folder
from san.data.market import dukemtmcreid, market1501
from san.data.msmt17 import msmt17
from san.data.records import ImageRecord, ReidDataset
from san.data.registry import DATASETS, load_dataset


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = _tiny_jpeg()


def write_files(root: Path, relative_paths: list[str]) -> None:
    """A real JPEG at each ``*.jpg``/``*.png`` path, a few text bytes elsewhere."""
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG if path.suffix in (".jpg", ".png") else b"not an image")


def pids(records: tuple[ImageRecord, ...]) -> list[int]:
    return sorted({r.pid for r in records})


def assert_absolute_existing(dataset: ReidDataset) -> None:
    for record in dataset.train + dataset.query + dataset.gallery:
        assert Path(record.path).is_absolute() and Path(record.path).is_file()


# --- Market-1501 / DukeMTMC-reID -------------------------------------------------------

MARKET_FILES = [
    "bounding_box_train/0002_c1s1_000451_03.jpg",
    "bounding_box_train/0002_c2s1_000301_01.jpg",
    "bounding_box_train/0007_c3s3_077419_03.jpg",
    "bounding_box_train/0010_c6s4_002452_02.jpg",
    "bounding_box_train/0000_c1s1_000001_01.jpg",  # distractor: not for training
    "bounding_box_train/Thumbs.db",  # skipped and counted
    "bounding_box_test/-1_c1s1_000401_03.jpg",  # junk: dropped
    "bounding_box_test/0000_c1s1_000151_01.jpg",  # distractors stay in the gallery
    "bounding_box_test/0000_c6s4_002402_05.jpg",
    "bounding_box_test/0001_c2s1_000301_01.jpg",
    "bounding_box_test/0003_c4s6_014616_01.jpg",
    "query/0001_c1s1_001051_00.jpg",
    "query/0003_c5s3_065187_00.jpg",
]


def test_market1501_junk_distractors_relabelling_and_skips(tmp_path: Path, capsys) -> None:
    write_files(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
    data = market1501(tmp_path)  # the release folder inside root is found
    assert data.name == "market1501"
    assert [(Path(r.path).name, r.pid, r.camid) for r in data.train] == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c3s3_077419_03.jpg", 1, 2),
        ("0010_c6s4_002452_02.jpg", 2, 5),
    ]
    assert [(r.pid, r.camid) for r in data.gallery] == [(0, 0), (0, 5), (1, 1), (3, 3)]
    assert [(r.pid, r.camid) for r in data.query] == [(1, 0), (3, 4)]
    assert_absolute_existing(data)
    printed = capsys.readouterr().out
    assert data.summary() in printed and "skipped 1 files" in printed


def test_dukemtmcreid_layout(tmp_path: Path, capsys) -> None:
    write_files(tmp_path / "DukeMTMC-reID", [
        "bounding_box_train/0001_c2_f0046182.jpg",
        "bounding_box_train/0001_c5_f0051341.jpg",
        "bounding_box_train/0005_c1_f0060014.jpg",
        "bounding_box_test/0002_c1_f0044158.jpg",
        "bounding_box_test/0008_c8_f0118394.jpg",
        "query/0002_c3_f0044245.jpg",
        "query/readme.txt",
    ])
    data = dukemtmcreid(tmp_path / "DukeMTMC-reID", verbose=False)
    assert [(r.pid, r.camid) for r in data.train] == [(0, 1), (0, 4), (1, 0)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(2, 0), (8, 7)]
    assert [(r.pid, r.camid) for r in data.query] == [(2, 2)]
    assert capsys.readouterr().out == ""


def test_market_duke_refuse_other_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected .*/bounding_box_train/ .*0002_c1s1_000451_03\.jpg"):
        market1501(tmp_path)
    write_files(tmp_path, [f for f in MARKET_FILES if not f.startswith("query/")])
    with pytest.raises(FileNotFoundError, match=r"expected .*/query/ with files like 0002_c1s1"):
        market1501(tmp_path)
    write_files(tmp_path, MARKET_FILES)
    with pytest.raises(ValueError, match=r"expected files like 0001_c2_f0046182\.jpg .*found none"):
        dukemtmcreid(tmp_path)  # Market names are not Duke names


# --- MSMT17 ----------------------------------------------------------------------------

MSMT_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_1.jpg 0",
                       "0001/0001_000_15_0303noon_0100_0.jpg 1"],
    "list_val.txt": ["0001/0001_002_03_0303noon_0101_0.jpg 1"],
    "list_query.txt": ["0000/0000_000_02_0303afternoon_0001_0.jpg 0"],
    "list_gallery.txt": ["0000/0000_003_07_0303afternoon_0002_0.jpg 0", "0001/0001_000_12_0304noon_0050_1.jpg 1"],
}


def write_msmt17(base: Path) -> None:
    for list_name, lines in MSMT_LISTS.items():
        folder_name = "train" if list_name in ("list_train.txt", "list_val.txt") else "test"
        write_files(base / folder_name, [line.split()[0] for line in lines])
        (base / list_name).write_text("\n".join(lines) + "\n")


def test_msmt17_lists_cameras_and_val(tmp_path: Path) -> None:
    write_msmt17(tmp_path / "MSMT17_V1")
    data = msmt17(tmp_path, verbose=False)
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (0, 4), (1, 14)]
    assert [(r.pid, r.camid) for r in data.query] == [(0, 1)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(0, 6), (1, 11)]
    assert [(r.pid, r.camid) for r in data.extra["val"]] == [(1, 2)]
    assert data.query[0].path == str(tmp_path / "MSMT17_V1/test/0000/0000_000_02_0303afternoon_0001_0.jpg")
    assert_absolute_existing(data)


def test_msmt17_refuses_other_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected .*/list_train\.txt .*0303morning"):
        msmt17(tmp_path)
    write_msmt17(tmp_path)
    (tmp_path / "list_query.txt").write_text("0000/0000_000_02_0303afternoon_0001_0.jpg 0\nbroken-line\n")
    with pytest.raises(ValueError, match=r"list_query\.txt:2: expected a line like"):
        msmt17(tmp_path)
    (tmp_path / "list_query.txt").write_text("0009/0009_000_02_0303afternoon_0001_0.jpg 9\n")
    with pytest.raises(FileNotFoundError, match=r"does not exist: expected the images of list_query\.txt under"):
        msmt17(tmp_path)


# --- generic folder --------------------------------------------------------------------


def test_folder_maps_names_consistently(tmp_path: Path, capsys) -> None:
    write_files(tmp_path, [
        "train/alice/camA_001.jpg",
        "train/alice/camB_7.png",
        "train/bob/camA_x.jpg",
        "query/carol/camA_1.jpg",
        "gallery/carol/camC_2.jpg",
        "gallery/dave/camA_3.jpg",
        "gallery/dave/noseparator.jpg",  # skipped: no camera prefix
        "gallery/notes.txt",  # skipped: not inside a pid folder
    ])
    data = load_dataset("folder", tmp_path)
    # pids by sorted name over all splits: alice 0, bob 1, carol 2, dave 3; cameras camA 0, camB 1, camC 2
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (0, 1), (1, 0)]
    assert [(r.pid, r.camid) for r in data.query] == [(2, 0)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(2, 2), (3, 0)]
    assert "skipped 2 files" in capsys.readouterr().out


def test_folder_refuses_other_layouts(tmp_path: Path) -> None:
    write_files(tmp_path, ["query/carol/camA_1.jpg"])
    with pytest.raises(FileNotFoundError, match=r"expected .*/gallery/ with files like <pid>/<camera>_"):
        folder(tmp_path)
    (tmp_path / "gallery").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*gallery"):
        folder(tmp_path)


# --- CUHK03 ----------------------------------------------------------------------------

PERSONS_PER_PAIR = (4, 3)  # the release has 5 pairs (843, 440, 77, 58, 49 persons)
PRESENT = {"labeled": (1, 2, 6), "detected": (1, 6)}  # 1-based image columns with an image
EXTRA_IMAGE = ("labeled", 1, 2, 10)  # labeled pair 1, person 2 also has column 10


def cuhk03_image(pair: int, person: int, idx: int) -> np.ndarray:
    """A distinct 16 x 8 (H x W) RGB image per cell."""
    y, x, c = np.meshgrid(np.arange(16), np.arange(8), np.arange(3), indexing="ij")
    return ((y * 8 + x + 60 * c + 7 * pair + 11 * person + 13 * idx) % 256).astype(np.uint8)


def write_cuhk03_mat(path: Path) -> None:
    """A MATLAB v7.3-style file: cells are datasets of object references into #refs#."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as mat:
        refs, names = mat.create_group("#refs#"), (f"r{i}" for i in itertools.count())

        def store(array: np.ndarray) -> h5py.Reference:
            return refs.create_dataset(next(names), data=array).ref

        for variant, present in PRESENT.items():
            pair_refs = []
            for pair, persons in enumerate(PERSONS_PER_PAIR, start=1):
                cells = np.empty((10, persons), dtype=h5py.ref_dtype)  # MATLAB persons x 10, transposed
                for person, idx in itertools.product(range(1, persons + 1), range(1, 11)):
                    if idx in present or (variant, pair, person, idx) == EXTRA_IMAGE:
                        cell = cuhk03_image(pair, person, idx).T  # stored (3, W, H)
                    elif idx == 3:
                        cell = np.zeros((0, 0), np.uint8)  # a 0-size empty cell
                    else:
                        cell = np.zeros(2, np.uint64)  # MATLAB's [0, 0] empty marker
                    cells[idx - 1, person - 1] = store(cell)
                pair_refs.append(store(cells))
            mat.create_dataset(variant, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # 5x1 -> (1, 5)
        testsets = [np.array([[1, 1 + k % 4], [2, 1 + k % 3]], np.float64) for k in range(20)]
        mat.create_dataset("testsets", data=np.array([[store(t.T) for t in testsets]], dtype=h5py.ref_dtype))


def _mat_element(mtype: int, payload: bytes) -> bytes:
    return struct.pack("<II", mtype, len(payload)) + payload + bytes(-len(payload) % 8)


def _mat_matrix(value: str | list[str] | np.ndarray, name: str = "") -> bytes:
    """A miMATRIX element: char row (str), cell column (list of str) or double matrix."""
    if isinstance(value, str):
        array_class, dims = 4, (1, len(value))
        data = _mat_element(4, np.array([ord(ch) for ch in value], "<u2").tobytes())
    elif isinstance(value, list):
        array_class, dims, data = 1, (len(value), 1), b"".join(_mat_matrix(v) for v in value)
    else:
        array_class, dims = 6, value.shape
        data = _mat_element(9, np.asarray(value, "<f8").tobytes(order="F"))
    header = (
        _mat_element(6, struct.pack("<II", array_class, 0))
        + _mat_element(5, np.array(dims, "<i4").tobytes())
        + _mat_element(1, name.encode())
    )
    return _mat_element(14, header + data)


def write_mat_v5(path: Path, variables: dict) -> None:
    """A compressed MATLAB v5 MAT-file, as the new-protocol configs are distributed."""
    header = b"MATLAB 5.0 MAT-file, written by the SAN tests".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    body = b""
    for name, value in variables.items():
        compressed = zlib.compress(_mat_matrix(value, name))
        body += struct.pack("<II", 15, len(compressed)) + compressed
    path.write_bytes(header + body)


def test_cuhk03_classic_protocol(tmp_path: Path, capsys) -> None:
    write_cuhk03_mat(tmp_path / "cuhk-03.mat")
    data = cuhk03(tmp_path, split=0, num_val=2)
    # identities in (pair, person) order get pids 1..7; split 0 tests (1,1) -> 1 and (2,1) -> 5
    # non-test (1,2) (1,3) (1,4) (2,2) (2,3): the last two are val, the first three train
    assert pids(data.query) == pids(data.gallery) == [1, 5]
    assert data.query == data.gallery and len(data.query) == 6 and data.single_shot
    assert {r.camid for r in data.query} == {0, 1}
    assert pids(data.extra["val"]) == [6, 7] and len(data.extra["val"]) == 6
    assert pids(data.train) == [0, 1, 2] and len(data.train) == 3 + 3 + 4  # (1,2) has 4 images
    assert_absolute_existing(data)
    assert data.summary() in capsys.readouterr().out

    # the transposed HDF5 image comes back as H x W x 3, pixel for pixel
    image = np.asarray(Image.open(tmp_path / "images_labeled" / "1_002_2_10.png"))
    np.testing.assert_array_equal(image, cuhk03_image(1, 2, 10))
    assert len(list((tmp_path / "images_labeled").glob("*.png"))) == 7 * 3 + 1

    split7 = cuhk03(tmp_path, split=7, num_val=2, verbose=False)  # tests (1, 4) and (2, 2)
    assert pids(split7.query) == [4, 6]
    with pytest.raises(ValueError, match=r"expected a classic split in 0\.\.19, got 20"):
        cuhk03(tmp_path, split=20, verbose=False)
    with pytest.raises(ValueError, match=r"only 5 non-test identities, cannot hold out 100"):
        cuhk03(tmp_path, verbose=False)


def test_cuhk03_detected_from_release_folder(tmp_path: Path) -> None:
    write_cuhk03_mat(tmp_path / "cuhk03_release" / "cuhk-03.mat")
    data = cuhk03(tmp_path, variant="detected", split=0, num_val=1, verbose=False)
    assert len(list((tmp_path / "images_detected").glob("*.png"))) == 7 * 2
    assert len(data.query) == 4 and len(data.train) == 2 * 4 and len(data.extra["val"]) == 2
    assert Path(data.query[0].path).name == "1_001_1_01.png"


def test_cuhk03_new_protocol_from_cache(tmp_path: Path) -> None:
    write_cuhk03_mat(tmp_path / "cuhk-03.mat")
    cuhk03(tmp_path, num_val=2, verbose=False)  # extracts images_labeled/
    (tmp_path / "cuhk-03.mat").unlink()  # the cache is enough from now on
    files = sorted(p.name for p in (tmp_path / "images_labeled").glob("*.png"))
    identity = [tuple(name.split("_")[:2]) for name in files]
    labels = np.array([[sorted(set(identity)).index(i) + 1] for i in identity], np.float64)
    one_based = np.arange(1, len(files) + 1)
    in_pair1 = np.array([name.startswith("1_") for name in files])
    cam2 = np.array([name.split("_")[2] == "2" for name in files])
    write_mat_v5(tmp_path / "cuhk03_new_protocol_config_labeled.mat", {
        "filelist": files,
        "labels": labels,
        "camId": cam2[:, None] + 1.0,
        "train_idx": one_based[in_pair1][:, None],
        "query_idx": one_based[~in_pair1 & ~cam2][:, None],
        "gallery_idx": one_based[~in_pair1 & cam2][:, None],
    })
    data = cuhk03(tmp_path, protocol="new", verbose=False)
    assert pids(data.train) == [0, 1, 2, 3] and len(data.train) == 4 * 3 + 1
    assert pids(data.query) == pids(data.gallery) == [5, 6, 7]
    assert len(data.query) == 6 and {r.camid for r in data.query} == {0}
    assert len(data.gallery) == 3 and {r.camid for r in data.gallery} == {1}
    assert not data.single_shot and data.protocol == "market1501"  # the new protocol is scored like Market-1501
    assert_absolute_existing(data)
    with pytest.raises(FileNotFoundError, match=r"cuhk03_new_protocol_config_detected\.mat"):
        write_cuhk03_mat(tmp_path / "cuhk-03.mat")
        cuhk03(tmp_path, variant="detected", protocol="new", verbose=False)


def test_cuhk03_refuses_other_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected .*/cuhk-03\.mat \(or .*/cuhk03_release/cuhk-03\.mat\)"):
        cuhk03(tmp_path)
    with pytest.raises(ValueError, match=r"expected variant in \('labeled', 'detected'\)"):
        cuhk03(tmp_path, variant="raw")
    with pytest.raises(ValueError, match="single split"):
        cuhk03(tmp_path, protocol="new", split=3)
    (tmp_path / "cuhk-03.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match=r"MATLAB v7\.3 \(HDF5\)"):
        cuhk03(tmp_path)


# --- registry --------------------------------------------------------------------------


def test_registry_names_and_unknown_name(tmp_path: Path) -> None:
    assert {"market1501", "dukemtmcreid", "cuhk03", "msmt17", "folder"} <= DATASETS.keys()
    with pytest.raises(ValueError, match=r"unknown data set 'market'; known: .*market1501"):
        load_dataset("market", tmp_path)
    write_msmt17(tmp_path)
    assert load_dataset("msmt17", tmp_path, verbose=False).name == "msmt17"


#: The address space a bomb test's process gets: the loader's own libraries fit, a bomb does not.
BOMB_ADDRESS_SPACE = 1536 * 2**20


def _load_under_address_limit(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a process whose address space is capped, so that a loader that inflated a
    bomb would fail there, never take the machine down."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (BOMB_ADDRESS_SPACE, BOMB_ADDRESS_SPACE))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, preexec_fn=cap)


def test_a_cuhk03_protocol_file_that_inflates_to_gigabytes_is_refused_before_inflating(tmp_path: Path) -> None:
    """3 MB of zlib that inflates to 3 GB, as the new protocol's config file."""
    write_cuhk03_mat(tmp_path / "cuhk-03.mat")
    cuhk03(tmp_path, num_val=2, verbose=False)  # extracts the images
    deflater, zeros, body = zlib.compressobj(9), bytes(2**24), b""
    for _ in range(3 * 2**30 // len(zeros)):
        body += deflater.compress(zeros)
    body += deflater.flush()
    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    (tmp_path / "cuhk03_new_protocol_config_labeled.mat").write_bytes(
        header + struct.pack("<II", 15, len(body)) + body)
    done = _load_under_address_limit(
        f"from san.data.cuhk03 import cuhk03; cuhk03({str(tmp_path)!r}, protocol='new', verbose=False)")
    assert "a compressed variable expands beyond 268435456 bytes, over the limit" in done.stderr, done.stderr[-2000:]
    assert "MemoryError" not in done.stderr


def test_a_cuhk03_release_whose_cell_declares_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    """A few KB of HDF5 whose image cell declares 3 x 30000 x 30000 bytes (never written: fill value)."""
    with h5py.File(tmp_path / "cuhk-03.mat", "w") as mat:
        huge = mat.create_dataset("#refs#/huge", shape=(3, 30000, 30000), dtype=np.uint8, chunks=(1, 1000, 1000),
                                  compression="gzip")
        cells = mat.create_dataset("#refs#/cells", data=np.array([[huge.ref]], dtype=h5py.ref_dtype))
        mat.create_dataset("labeled", data=np.array([[cells.ref]], dtype=h5py.ref_dtype))
    assert (tmp_path / "cuhk-03.mat").stat().st_size < 100_000
    done = _load_under_address_limit(f"from san.data.cuhk03 import cuhk03; cuhk03({str(tmp_path)!r}, verbose=False)")
    assert "dataset /#refs#/huge of shape (3, 30000, 30000) holds 2700000000 bytes" in done.stderr, done.stderr[-2000:]
    assert "MemoryError" not in done.stderr
