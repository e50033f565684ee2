"""``san-search``: nearest neighbours in a ``san-embed`` folder, ranked-list and attention pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtime.base import BackendError
from runtime.embed import EmbedError
from runtime.options import add_backend_arguments, backend_options
from runtime.pictures import Tile, attention_overlay_pngs, person_id, ranked_list_png
from runtime.registry import BACKENDS, open_backend
from runtime.search import ENGINES, METRICS, EmbeddingFolder, Hits, SearchError, build_index, embed_query_images
from san.preprocess import ImageDecodeError
from san.spec import ContractError
from san.command import command

DESCRIPTION = """\
Search a folder of embeddings written by san-embed (embeddings.npy + index.csv + meta.json).

  san-search build EMB_DIR                       save an index (FAISS when installed)
  san-search query EMB_DIR --images Q.jpg --model model.onnx [-k 10] [--png list.png]
  san-search query EMB_DIR --rows 0 5            query with stored rows instead
  san-search masks --ckpt model.pt --images A.jpg B.jpg --out DIR   attention overlays

Run `san-search COMMAND --help` for the options of each.
"""

BUILD_EPILOG = """\
Engines: numpy (exact brute force, nothing to install) and faiss (exact IndexFlatL2 /
IndexFlatIP; pip install faiss-cpu, or the project's `search` extra). Metrics: l2 (Euclidean,
as evaluation ranks) and cosine (distance = 1 - cosine similarity). Writes EMB_DIR/search.json
(and faiss.index); `query` then uses them unless told otherwise, and refuses them once the
embeddings change.

examples:
  san-search build photos_embeddings/
  san-search build photos_embeddings/ --engine numpy --metric cosine
"""

QUERY_EPILOG = """\
Query images are decoded, resized and embedded exactly as the folder was (its contract,
--tta and --l2-normalize from meta.json); --model must be the network that made the folder
(the checkpoint or any export of it). Results include the query itself when it is in the
folder (distance 0). Output: one block per query, lines "rank  distance  path".

--png draws the query and its top k: green frame = same person id, red = another id, grey =
unknown (ids come from Market-1501 / DukeMTMC-reID file names, e.g. 0002_c1s1_000451_03.jpg).
With several queries, PATH gets -1, -2, ... before its suffix.

examples:
  san-search query photos_embeddings/ --images q/0001_c1s1_000151_01.jpg --model model.onnx -k 10
  san-search query photos_embeddings/ --rows 0 5 -k 5 --png top5.png
  san-search query emb/ --rows 3 --image-root /data/photos --png row3.png   # folder moved
"""

MASKS_EPILOG = """\
One PNG per image: the image (resized as the model sees it), then one tile per attention
block: the share of channels whose deterministic mask is on at each position, stretched to
the block's own range, blended over the image (red = attended), as in the paper's Fig. 6.

example:
  san-search masks --ckpt model.pt --images q/0001_c1s1_000151_01.jpg q/0002_c2s1_000301_01.jpg --out masks/
"""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-search`` and its three commands."""
    parser = argparse.ArgumentParser(prog="san-search", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    build = commands.add_parser("build", help="save a search index over an embeddings folder",
                                epilog=BUILD_EPILOG, formatter_class=raw)
    build.add_argument("folder", type=Path, metavar="EMB_DIR", help="output folder of san-embed")
    build.add_argument("--engine", choices=sorted(ENGINES), help="default: faiss when installed, else numpy")
    build.add_argument("--metric", choices=METRICS, default="l2", help="default l2")

    query = commands.add_parser("query", help="top k of query images or stored rows",
                                epilog=QUERY_EPILOG, formatter_class=raw)
    query.add_argument("folder", type=Path, metavar="EMB_DIR", help="output folder of san-embed")
    source = query.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, nargs="+", metavar="IMAGE", help="query image files (needs --model)")
    source.add_argument("--rows", type=int, nargs="+", metavar="ROW", help="rows of embeddings.npy to query with")
    query.add_argument("--model", type=Path, help="model.pt / model.onnx / model.engine that made EMB_DIR")
    query.add_argument("--backend", choices=sorted(BACKENDS), help="override the backend chosen by the suffix")
    query.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    query.add_argument("--engine", choices=sorted(ENGINES), help="default: the built index's, else faiss when installed")
    query.add_argument("--metric", choices=METRICS, help="default: the built index's, else l2")
    query.add_argument("--png", type=Path, metavar="PATH", help="also draw each ranked list as a PNG")
    query.add_argument("--image-root", type=Path, metavar="DIR",
                       help="where the folder's images are now (default: recorded by san-embed)")
    add_backend_arguments(query)

    masks = commands.add_parser("masks", help="attention-mask overlays per block (paper Fig. 6)",
                                epilog=MASKS_EPILOG, formatter_class=raw)
    masks.add_argument("--ckpt", type=Path, required=True, help="SAN checkpoint (.pt)")
    masks.add_argument("--images", type=Path, nargs="+", required=True, metavar="IMAGE", help="image files")
    masks.add_argument("--out", type=Path, required=True, help="folder for the PNGs (created)")
    masks.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    return parser


def _query_vectors(args: argparse.Namespace, folder: EmbeddingFolder) -> tuple[np.ndarray, list[str]]:
    """(query embeddings, the query names shown) from --rows or --images."""
    if args.rows is not None:
        bad = [r for r in args.rows if not 0 <= r < len(folder.paths)]
        if bad:
            raise SearchError(f"--rows {bad}: {folder.root} holds rows 0..{len(folder.paths) - 1}")
        return np.asarray(folder.vectors[args.rows]), [folder.paths[r] for r in args.rows]
    if args.model is None:
        raise SearchError("--images needs --model (the network that made the embeddings)")
    with open_backend(args.model, args.backend, **backend_options(args)) as backend:
        for note in backend.notes:
            print(f"san-search: note: {note}", file=sys.stderr)
        if backend.sha256 != folder.meta.get("model_sha256"):
            print(f"san-search: note: {args.model} is not the file that made {folder.root}; distances are only "
                  "meaningful if it is the same network (e.g. the ONNX export of that checkpoint)", file=sys.stderr)
        return embed_query_images(folder, backend, args.images), [str(p) for p in args.images]


def _png_path(base: Path, index: int, count: int) -> Path:
    return base if count == 1 else base.with_name(f"{base.stem}-{index + 1}{base.suffix}")


def query(args: argparse.Namespace) -> int:
    """``san-search query``: print the top k; draw them with --png."""
    folder = EmbeddingFolder.open(args.folder)
    vectors, names = _query_vectors(args, folder)
    hits: Hits = folder.searcher(args.engine, args.metric).search(vectors, args.k)
    root = folder.image_root(args.image_root) if args.png else None
    tile_width = round(128 * folder.spec.width / folder.spec.height)
    for i, name in enumerate(names):
        ranked = list(enumerate(zip(hits.rows[i], hits.distances[i]), start=1))
        print(f"query {i + 1}: {name}")
        for rank, (row, dist) in ranked:
            print(f"  {rank:>4}  {dist:10.4f}  {folder.paths[row]}")
        if root is not None:
            query_file = root / name if args.rows is not None else Path(name)
            results = [Tile(root / folder.paths[row], person_id(folder.paths[row]), f"#{rank} {dist:.3g}")
                       for rank, (row, dist) in ranked]
            out = ranked_list_png(Tile(query_file, person_id(name), "query"), results,
                                  _png_path(args.png, i, len(names)), 128, tile_width)
            print(f"  -> {out}")
    return 0


@command("san-search")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-search``; 0 done, 2 bad arguments or files."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "build":
            record = build_index(EmbeddingFolder.open(args.folder), args.engine, args.metric)
            print(f"built a {record['engine']} {record['metric']} index of {record['rows']} rows in {args.folder}")
            return 0
        if args.command == "query":
            return query(args)
        for path in attention_overlay_pngs(args.ckpt, args.images, args.out, args.device):
            print(path)
        return 0
    except (SearchError, EmbedError, ContractError, BackendError, ImageDecodeError, ValueError, OSError,
            ImportError) as exc:
        print(f"san-search {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
