"""``san-search``: nearest neighbours in a ``san-embed`` folder, ranked-list and attention pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtime.embed import INDEX
from runtime.options import BACKEND, model_choice
from runtime.pictures import Tile, attention_overlay_pngs, person_id, ranked_list_png
from runtime.registry import BACKENDS, open_backend
from runtime.search import (
    ENGINES,
    METRICS,
    EmbeddingFolder,
    Hits,
    IndexSpec,
    SearchError,
    build_index,
    default_engine,
    embed_query_images,
    faiss_module,
    reranked_search,
)
from san.cli.arguments import (
    CommandParser,
    DeviceGroup,
    RerankGroup,
    RunGroup,
    count,
    existing_file,
    existing_folder,
    model_file,
    output_file,
    output_folder,
)
from san.cli.command import command, subcommand
from san.contract.artifact import ARTIFACT_KINDS
from san.contract.confinement import confined
from san.contract.spec import ContractError
from san.io.output_lock import exclusive_output

DESCRIPTION = """\
Search a folder of embeddings written by san-embed (embeddings.npy + index.csv + meta.json).

  san-search build EMB_DIR [--index flat|ivf|hnsw|FACTORY]   save an index, with its recall@10
  san-search query EMB_DIR --images Q.jpg --model model.onnx [-k 10] [--png list.png]
  san-search query EMB_DIR --rows 0 5            query with stored rows instead
  san-search masks --ckpt model.pt --images A.jpg B.jpg --out DIR   attention overlays

Run `san-search COMMAND --help` for the options of each.
"""

BUILD_EPILOG = """\
Indexes: numpy (exact brute force, nothing to install) or FAISS (pip install '.[search]'):
flat (exact), ivf (IVF<nlist>,Flat: --nlist lists, default about 4 sqrt(N); --nprobe searched),
hnsw (HNSW<M>: --ef-search), or any faiss.index_factory string (e.g. IVF4096,PQ32). Trained on
a sample of 39..256 rows per centroid, as FAISS asks. Metrics: l2 (Euclidean, as evaluation
ranks) and cosine (distance = 1 - cosine similarity; inner product on unit vectors).

Build measures recall@10 against exact search on held-out stored rows and prints it; it goes
into EMB_DIR/search.json with the parameters (the index itself: faiss.index). `query` then
uses them, and refuses them once the embeddings change.

examples:
  san-search build photos_embeddings/
  san-search build photos_embeddings/ --index ivf --nprobe 32 --metric cosine
  san-search build photos_embeddings/ --index hnsw --ef-search 128
  san-search build photos_embeddings/ --index IVF1024,PQ32
"""

QUERY_EPILOG = """\
Query images are decoded, resized and embedded exactly as the folder was (its contract,
--tta and --l2-normalize from meta.json); --model must be the network that made the folder
(the checkpoint or any export of it). Results include the query itself when it is in the
folder (distance 0). Output: one block per query, lines "rank  distance  path".

--png draws the query and its top k: green frame = same person id, red = another id, grey =
unknown (ids come from Market-1501 / DukeMTMC-reID file names, e.g. 0002_c1s1_000451_03.jpg).
With several queries, PATH gets -1, -2, ... before its suffix.

--rerank re-ranks each query's top --candidates by k-reciprocal encoding (Zhong et al., CVPR
2017), sparse form: neighbour lists come from the index, so memory grows with k1 x the rows
touched, not N^2; the printed distances are then the re-ranked ones.

examples:
  san-search query photos_embeddings/ --images q/0001_c1s1_000151_01.jpg --model model.onnx -k 10
  san-search query photos_embeddings/ --rows 0 5 -k 10 --rerank --candidates 200
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


BUILD_RUN = RunGroup()
RERANK = RerankGroup()
MASKS_DEVICE = DeviceGroup("cpu")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-search`` and its three commands."""
    parser = CommandParser(prog="san-search", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    build = commands.add_parser("build", help="save a search index over an embeddings folder",
                                epilog=BUILD_EPILOG, formatter_class=raw)
    build.add_argument("folder", type=existing_folder, metavar="EMB_DIR", help="output folder of san-embed")
    build.add_argument("--index", metavar="KIND", help="numpy, flat, ivf, hnsw or a FAISS factory string "
                       "(default: flat when FAISS is installed, else numpy)")
    build.add_argument("--metric", choices=METRICS, default="l2", help="default l2")
    build.add_argument("--nlist", type=count(1), help="inverted lists of ivf (default: about 4 sqrt(N))")
    build.add_argument("--nprobe", type=count(1), default=IndexSpec.nprobe, help="lists searched (default %(default)s)")
    build.add_argument("--ef-search", type=count(1), default=IndexSpec.ef_search,
                       help="HNSW search breadth (default %(default)s)")
    build.add_argument("--recall-queries", type=count(0), default=1000, metavar="N",
                       help="held-out rows recall@10 is measured on (default %(default)s)")
    BUILD_RUN.add_to(build)

    query = commands.add_parser("query", help="top k of query images or stored rows",
                                epilog=QUERY_EPILOG, formatter_class=raw)
    query.add_argument("folder", type=existing_folder, metavar="EMB_DIR", help="output folder of san-embed")
    source = query.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=existing_file, nargs="+", metavar="IMAGE",
                        help="query image files (needs --model or --profile)")
    source.add_argument("--rows", type=count(0), nargs="+", metavar="ROW", help="rows of embeddings.npy to query with")
    network = query.add_mutually_exclusive_group()
    network.add_argument("--model", type=model_file(*ARTIFACT_KINDS),
                         help="model.pt / model.onnx / model.engine / model.xml that made EMB_DIR")
    network.add_argument("--profile", type=existing_file, metavar="PROFILE.json",
                         help="run the model, backend and options san-tune chose on this machine")
    query.add_argument("--backend", choices=sorted(BACKENDS), help="override the backend chosen by the suffix")
    query.add_argument("-k", type=count(1), default=10, help="results per query (default 10)")
    query.add_argument("--engine", choices=ENGINES,
                       help="numpy: exact, ignoring a built index; faiss: the built index, else exact flat "
                       "(default: the built index's, else faiss when installed)")
    query.add_argument("--metric", choices=METRICS, help="default: the built index's, else l2")
    query.add_argument("--nprobe", type=count(1), help="override the built index's nprobe")
    query.add_argument("--ef-search", type=count(1), help="override the built index's efSearch")
    RERANK.add_to(query)
    query.add_argument("--candidates", type=count(1), default=100, metavar="N",
                       help="with --rerank: re-rank each query's top N from the index (default %(default)s)")
    query.add_argument("--png", type=output_file, metavar="PATH", help="also draw each ranked list as a PNG")
    query.add_argument("--image-root", type=existing_folder, metavar="DIR",
                       help="where the folder's images are now (default: recorded by san-embed)")
    BACKEND.add_to(query)

    masks = commands.add_parser("masks", help="attention-mask overlays per block (paper Fig. 6)",
                                epilog=MASKS_EPILOG, formatter_class=raw)
    masks.add_argument("--ckpt", type=model_file("checkpoint"), required=True, help="SAN checkpoint (.pt)")
    masks.add_argument("--images", type=existing_file, nargs="+", required=True, metavar="IMAGE", help="image files")
    masks.add_argument("--out", type=output_folder, required=True, help="folder for the PNGs (created)")
    MASKS_DEVICE.add_to(masks)
    return parser


def _query_vectors(args: argparse.Namespace, folder: EmbeddingFolder) -> tuple[np.ndarray, list[str]]:
    """(query embeddings, the query names shown) from --rows or --images."""
    if args.rows is not None:
        bad = [r for r in args.rows if not 0 <= r < len(folder.paths)]
        if bad:
            raise SearchError(f"--rows {bad}: {folder.root} holds rows 0..{len(folder.paths) - 1}")
        return np.asarray(folder.vectors[args.rows]), [folder.paths[r] for r in args.rows]
    if args.model is None and args.profile is None:
        raise SearchError("--images needs --model or --profile (the network that made the embeddings)")
    chosen = model_choice(args, "san-search")
    with open_backend(chosen.model, chosen.backend, **chosen.options) as backend:
        for note in backend.notes:
            print(f"san-search: note: {note}", file=sys.stderr)
        if backend.sha256 != folder.meta.get("model_sha256"):
            print(f"san-search: note: {chosen.model} is not the file that made {folder.root}; distances are only "
                  "meaningful if it is the same network (e.g. the ONNX export of that checkpoint)", file=sys.stderr)
        return embed_query_images(folder, backend, args.images), [str(p) for p in args.images]


def _png_path(base: Path, index: int, count: int) -> Path:
    return base if count == 1 else base.with_name(f"{base.stem}-{index + 1}{base.suffix}")


def build(args: argparse.Namespace) -> int:
    """``san-search build``: save an index and print what it gives up."""
    kind = args.index or ("flat" if default_engine() == "faiss" else "numpy")
    spec = IndexSpec(kind, args.metric, args.nlist, args.nprobe, args.ef_search)
    if kind != "numpy":
        faiss_module()  # a missing extra is named before any file is read
    with exclusive_output(args.folder):  # the lock san-embed holds while it writes the folder
        record = build_index(EmbeddingFolder.open(args.folder), spec, args.recall_queries,
                             progress=BUILD_RUN.read(args).progress)
    what = record.get("factory", "numpy (exact)")
    recall = record["recall_at_10"]
    measured = (f"recall@10 {recall['value']:.4f} on {recall['queries']} stored rows ({recall['held_out']} outside "
                f"the training sample)" if recall["queries"] else recall.get("note", "exact"))
    settings = ", ".join(f"{k} {v}" for k, v in record.get("search_parameters", {}).items())
    print(f"built {what} ({record['metric']}) over {record['rows']} rows in {record['build_seconds']:.1f} s: "
          f"{measured}{f' ({settings})' if settings else ''} -> {args.folder / 'search.json'}")
    return 0


def query(args: argparse.Namespace) -> int:
    """``san-search query``: print the top k; draw them with --png."""
    folder = EmbeddingFolder.open(args.folder)
    vectors, names = _query_vectors(args, folder)
    searcher = folder.searcher(args.engine, args.metric, args.nprobe, args.ef_search)
    params = RERANK.read(args)
    hits: Hits = (reranked_search(searcher, folder.vectors, vectors, args.k, args.candidates, params) if params
                  else searcher.search(vectors, args.k))
    root = folder.image_root(args.image_root) if args.png else None
    tile_height = 160
    tile_width = round(tile_height * folder.spec.width / folder.spec.height)
    for i, name in enumerate(names):
        ranked = list(enumerate(zip(hits.rows[i], hits.distances[i]), start=1))
        print(f"query {i + 1}: {name}")
        for rank, (row, dist) in ranked:
            print(f"  {rank:>4}  {dist:10.4f}  {folder.paths[row]}")
        if root is None:
            continue
        query_file = _inside(root, name) if args.rows is not None else Path(name)
        files = {row: _inside(root, folder.paths[row]) for _, (row, _) in ranked}
        outside = sum(f is None for f in files.values()) + (query_file is None)
        if outside:
            print(f"  skipped {outside} image(s) whose path in {folder.root / INDEX} leaves the image root {root}")
        if query_file is None:
            continue
        results = [Tile(file, person_id(folder.paths[row]),
                        (f"#{rank} {_id_text(person_id(folder.paths[row]))}", f"d {dist:.3g}"))
                   for rank, (row, dist) in ranked if (file := files[row]) is not None]
        out = ranked_list_png(Tile(query_file, person_id(name), ("query", _id_text(person_id(name)))), results,
                              _png_path(args.png, i, len(names)), tile_height, tile_width)
        print(f"  -> {out}")
    return 0


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays inside ``root`` (no ``..``, not absolute, no symlink out)."""
    try:
        return confined(root, relative, root, "an image")
    except ContractError:
        return None


def _id_text(pid: int | None) -> str:
    """A person id as a caption shows it."""
    return "id ?" if pid is None else f"id {pid}"


@command("san-search")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-search``; 0 done, 2 bad arguments or files."""
    args = build_parser().parse_args(argv)
    subcommand(args.command)
    if args.command == "build":
        return build(args)
    if args.command == "query":
        return query(args)
    for path in attention_overlay_pngs(args.ckpt, args.images, args.out, MASKS_DEVICE.read(args) or "cpu"):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
