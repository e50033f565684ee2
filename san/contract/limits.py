"""The largest sizes a file from another machine may ask for, each checked before anything is
allocated for it (torch-free).

A contract, a checkpoint's model config or a resume file is a few bytes that can ask for
terabytes. Each limit below is far above what a real re-ID model or run uses and far below
what would exhaust a machine; a file beyond one is refused in one line that names the file,
the field, the value and the limit (:func:`check_size`).

A user who needs more (a larger model's checkpoint, larger frames) raises a limit with the
environment variable named like it, ``SAN_MAX_CHECKPOINT_BYTES=8589934592``: code reads each
limit through :func:`limit`, and every command checks the variables before it starts
(:func:`check_overrides`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from san.io.errors import ToolkitError

#: Contract height and width, in pixels. Re-ID crops are 256 x 128 (the paper) to 384 x 192;
#: 2048 leaves 5x room, and one uint8 batch of 32 images at 2048 x 2048 is already 400 MB.
MAX_IMAGE_SIDE = 2048
#: Embedding dimension. Re-ID heads give 128 to 2048 (a ResNet-50's pooled features); 16384
#: floats are 64 KiB per image, 64 GiB for a million images.
MAX_EMBEDDING_DIM = 16384
#: The embedding head's hidden width. The paper's is 1024; at 65536 the head's first layer
#: (2048 x 65536 floats) is already 512 MiB.
MAX_HIDDEN_DIM = 65536

#: An image's decoded pixels, in bytes (its pixel count times its mode's bytes per pixel: 1 for
#: 8-bit grey, 2 for 16-bit grey, 3 for RGB). Re-ID crops are tens of KB and an 8K RGB camera frame
#: (7680 x 4320) is 100 MB; Pillow's own guard counts pixels alone (89.5 M), which lets a 16-bit
#: image take 179 MB before conversion, in each decode worker.
MAX_DECODED_IMAGE_BYTES = 128 * 2**20

#: One dataset read from CUHK03's MATLAB v7.3 release (HDF5): an image is 3 x ~300 x ~150 bytes
#: and the cell arrays of references a few KB; a compressed dataset of a few KB can declare
#: gigabytes, so its declared size is checked before it is read.
MAX_MAT_DATASET_BYTES = 64 * 2**20
#: One variable (and one file) of a MATLAB v5 protocol file: CUHK03's new-protocol lists of
#: 14097 file names are under 2 MB; a zlib stream of 3 MB can inflate to 3 GB.
MAX_MAT_VARIABLE_BYTES = 256 * 2**20

#: A checkpoint's contents once unpacked. A ResNet-50 SAN with its Adam state (``last.pt``) is
#: about 450 MB; a zip archive of a few MB can declare many gigabytes of deflated zeros.
MAX_CHECKPOINT_BYTES = 4 * 2**30

#: A checkpoint's pickled record (``data.pkl``: config, training log, tensor references): about
#: 100 KB for a SAN; read without torch by ``san-info``, so it is bounded on its own.
MAX_CHECKPOINT_RECORD_BYTES = 64 * 2**20

#: An engine's JSON sidecar (:mod:`san.contract.engine_sidecar`): about 2 KB; it is read whole.
MAX_SIDECAR_BYTES = 2**20
#: A ``san-tune`` profile (:mod:`runtime.tune`): a few KB; it is read whole.
MAX_PROFILE_BYTES = 2**20

#: What reading a FAISS index may allocate beyond twice its file's size: the tables FAISS computes
#: on read (an IVF-PQ's precomputed distance tables, an HNSW's search buffers) are tens of MB for
#: the toolkit's index kinds. FAISS allocates each array a file declares before reading it, so a
#: few KB can ask for terabytes; the bound is enforced while FAISS reads (:func:`address_space_at_most`).
FAISS_READ_ALLOWANCE_BYTES = 2**30


def faiss_read_allowance(file_bytes: int) -> int:
    """The memory reading a FAISS index file of ``file_bytes`` may take."""
    return 2 * file_bytes + FAISS_READ_ALLOWANCE_BYTES


class LimitError(ToolkitError, ValueError):
    """A size a file asks for is beyond its limit."""


#: The limits a variable ``SAN_<name>`` may override.
OVERRIDABLE = ("MAX_IMAGE_SIDE", "MAX_EMBEDDING_DIM", "MAX_HIDDEN_DIM", "MAX_DECODED_IMAGE_BYTES",
               "MAX_MAT_DATASET_BYTES", "MAX_MAT_VARIABLE_BYTES", "MAX_CHECKPOINT_BYTES", "MAX_CHECKPOINT_RECORD_BYTES")


def limit(name: str) -> int:
    """The limit ``name`` (one of :data:`OVERRIDABLE`): the variable ``SAN_<name>`` when set, else
    the constant; :class:`LimitError` for a variable that is not a whole number >= 1."""
    text = os.environ.get(f"SAN_{name}")
    if text is None:
        return int(globals()[name])
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LimitError(f"SAN_{name}={text!r}: expected a whole number >= 1 (default {globals()[name]})")
    return value


def check_overrides() -> None:
    """Raise :class:`LimitError` for the first ``SAN_MAX_*`` variable that is not a limit of
    :data:`OVERRIDABLE` or not a whole number >= 1."""
    for variable in sorted(v for v in os.environ if v.startswith("SAN_MAX_")):
        if variable[len("SAN_"):] not in OVERRIDABLE:
            raise LimitError(f"{variable}: not a limit; the limits are {', '.join(f'SAN_{n}' for n in OVERRIDABLE)}")
        limit(variable[len("SAN_"):])


def check_size(value: object, bound: str, field: str) -> int:
    """``value`` when it is an integer in 1..``limit(bound)``; else :class:`LimitError` naming
    ``field`` (and, beyond the limit, the limit and its variable).

    Booleans are not integers here (JSON ``true`` is not a size)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(f"{field} must be an integer, got {value!r}")
    if value < 1:
        raise LimitError(f"{field} must be at least 1, got {value}")
    if over := exceeds(value, bound):
        raise LimitError(f"{field} {value} is {over}")
    return value


def exceeds(size: int, bound: str) -> str:
    """Empty when ``size`` is within ``limit(bound)``; else the words that say it is not, naming
    the limit and how to raise it."""
    largest = limit(bound)
    return f"over the limit of {largest} (san.contract.limits.{bound}; SAN_{bound} raises it)" if size > largest else ""


@contextmanager
def address_space_at_most(extra_bytes: int) -> Iterator[None]:
    """Let this process's address space grow by at most ``extra_bytes`` while the block runs, so
    that a native reader allocating what a file declares gets ``MemoryError`` (a failed
    allocation) instead of the machine's memory.

    Linux's ``RLIMIT_AS``, lowered for the block and restored after it: the block must be the
    only thing allocating (no other thread at work). Elsewhere, or when the limit is already
    tighter, nothing changes.
    """
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
        used = pages * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError, IndexError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + extra_bytes if hard == resource.RLIM_INFINITY else min(used + extra_bytes, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
