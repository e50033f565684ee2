"""MSMT17 (V1) from its list files.

Layout: ``<root>/{train,test}/`` image folders and ``list_{train,val,query,gallery}.txt``
with lines ``<pid dir>/<file>.jpg <pid>``; train/val paths are relative to ``train/``,
query/gallery paths to ``test/``. The camera is the third ``_`` field of the file name
(``0000_000_01_0303morning_0015_0.jpg`` -> camera 1 -> camid 0). Training uses
``list_train`` only (pids relabelled 0..N-1); ``list_val`` goes to ``extra["val"]`` with
the listed pids (MSMT17 lists already number the training ids 0..1040).
"""

from __future__ import annotations

from pathlib import Path

from san.data.layout import locate, relabel, report, require_dirs
from san.data.records import ImageRecord, ReidDataset

RELEASE_DIR = "MSMT17_V1"
LISTS = {  # split -> (image folder, list file)
    "train": ("train", "list_train.txt"),
    "val": ("train", "list_val.txt"),
    "query": ("test", "list_query.txt"),
    "gallery": ("test", "list_gallery.txt"),
}
LINE_EXAMPLE = "0000/0000_000_01_0303morning_0015_0.jpg 0"


def _parse_line(line: str, image_dir: Path) -> ImageRecord:
    relative, pid = line.split()
    camid = int(Path(relative).name.split("_")[2]) - 1
    return ImageRecord(str(image_dir / relative), int(pid), camid)


def _read_list(base: Path, image_folder: str, list_name: str) -> tuple[ImageRecord, ...]:
    """Records of one list file; the first listed image must exist under ``image_folder``."""
    list_path = base / list_name
    if not list_path.is_file():
        raise FileNotFoundError(f"expected {list_path} with lines like '{LINE_EXAMPLE}'")
    records = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_parse_line(line, base / image_folder))
        except (ValueError, IndexError):
            raise ValueError(
                f"{list_path}:{number}: expected a line like '{LINE_EXAMPLE}', got {line!r}"
            ) from None
    if records and not Path(records[0].path).is_file():
        raise FileNotFoundError(
            f"{records[0].path} (listed in {list_path}) does not exist: "
            f"expected the images of {list_name} under {base / image_folder}/"
        )
    return tuple(records)


def msmt17(root: str | Path, verbose: bool = True) -> ReidDataset:
    """MSMT17 from ``root`` or ``root/MSMT17_V1``."""
    base = locate(root, RELEASE_DIR, LISTS["train"][1])
    if base is None:
        root = Path(root).expanduser().resolve()
        raise FileNotFoundError(
            f"expected {root}/list_train.txt (or {root}/{RELEASE_DIR}/list_train.txt) beside "
            f"train/ and test/ image folders, with lines like '{LINE_EXAMPLE}'"
        )
    require_dirs(base, ("train", "test"), LINE_EXAMPLE.split()[0])
    splits = {split: _read_list(base, *folder_and_list) for split, folder_and_list in LISTS.items()}
    dataset = ReidDataset(
        "msmt17",
        relabel(splits["train"]),
        splits["query"],
        splits["gallery"],
        extra={"val": splits["val"]},
    )
    return report(dataset, verbose)
