"""Files a model names, kept inside the model's own folder (torch-free).

An ONNX file names its external data by relative ``location``; an OpenVINO IR reads the
``.bin`` beside its ``.xml``. Models are copied between machines, so either can point
anywhere: ``../../etc/shadow``, an absolute path, or a symlink that leaves the folder. Each
runtime checks this differently by version, so the toolkit checks it itself, before any
runtime opens the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePath

import onnx

from san.contract.spec import ContractError


def confined(folder: Path, relative: str, where: str | Path, what: str) -> Path:
    """``folder / relative`` when it stays inside ``folder`` once symlinks are resolved.

    Raises :class:`ContractError` naming ``where`` and ``what`` for an absolute path, a ``..``
    component or a symlink that resolves outside the folder.
    """
    name = PurePath(relative)
    if name.is_absolute() or name.anchor or ".." in name.parts:
        raise ContractError(f"{where}: refused: {what} {relative!r} is not a plain path inside the model's folder")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ContractError(f"{where}: refused: {what} {relative!r} resolves to {path.resolve()}, "
                            f"outside the model's folder {folder}")
    return path


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph stores: initializers, sparse ones, attribute tensors, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _tensors(sub)


def check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse an ONNX model (loaded without its external data) whose external data lies outside
    the folder of ``path``."""
    for tensor in _tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        confined(path.parent, location, path, f"the external data of tensor {tensor.name!r},")


def check_ir_weights(xml_path: Path) -> None:
    """Refuse an OpenVINO IR whose weights (the ``.bin`` beside it) resolve outside its folder."""
    weights = xml_path.with_suffix(".bin")
    if weights.is_symlink() or weights.exists():
        confined(xml_path.parent, weights.name, xml_path, "its weights file")
