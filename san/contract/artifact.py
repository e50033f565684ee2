"""Reading what the toolkit writes, without torch: names, metadata keys, contracts, provenance.

Three artifact kinds carry a model and its input contract (:class:`san.contract.spec.InputSpec`):

- a checkpoint (``.pt``): weights, model config, contract, training state
  (:mod:`san.training.checkpoint`; :func:`read_checkpoint_header` reads all but the weights);
- an ONNX file: the contract and provenance in ``metadata_props`` under the keys below,
  input ``images`` (uint8 RGB NCHW), output ``embeddings``;
- a TensorRT engine: the same facts in a JSON sidecar ``<engine>.json`` (:mod:`san.contract.engine_sidecar`);
- an OpenVINO IR (``.xml`` + ``.bin``): the ONNX file's ``metadata_props`` in the model's
  runtime info, section ``san`` (read from the XML, without OpenVINO).

Every consumer (runtime backends, calibration, parity, export checks) reads artifacts
through this module, so none depends on the code that wrote them.
"""

from __future__ import annotations

import json
import pickle
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx.external_data_helper import load_external_data_for_model

from san.contract.confinement import check_external_data, check_ir_weights
from san.contract.engine_sidecar import EngineSidecar
from san.contract.input_convention import INPUT_CONVENTION_KEY, InputConvention
from san.contract.limits import exceeds
from san.contract.spec import METADATA_KEY, ContractError, InputSpec
from san.io.error_reason import reason

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
BATCH_DIM = "batch"

CHECKPOINT_SHA_KEY = "san.checkpoint_sha256"
CONFIG_KEY = "san.model_config"
TORCH_VERSION_KEY = "san.torch_version"
EXPORTER_KEY = "san.exporter"
PRECISION_KEY = "san.precision"
#: Stages whose attention mask is hard (0/1) in the deployed graph, as the generators said at export.
HARD_MASKS_KEY = "san.hard_mask_stages"

#: The runtime-info section of an OpenVINO IR that holds the ONNX file's ``metadata_props``.
IR_SECTION = "san"


def pi_name(stage: int) -> str:
    """Graph name of the normalised attention probabilities of the block after ``stage``."""
    return f"pi_{stage}"


# -- ONNX ------------------------------------------------------------------------------------
def load_onnx(onnx_path: str | Path) -> onnx.ModelProto:
    """The ONNX model at ``onnx_path``, without its external data; :class:`ContractError` naming
    the file when unreadable or when its external data lies outside its folder."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ContractError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ContractError(f"{path}: not a readable ONNX file ({exc})") from exc
    check_external_data(proto, path)
    return proto


def load_onnx_with_data(onnx_path: str | Path) -> onnx.ModelProto:
    """:func:`load_onnx` with its external data, read from inside its folder; :class:`ContractError`
    naming the file when that data is missing or shorter than the graph says."""
    proto = load_onnx(onnx_path)
    try:
        load_external_data_for_model(proto, str(Path(onnx_path).parent))
    except Exception as exc:  # noqa: BLE001 - onnx raises OSError, ValueError or its checker's ValidationError
        raise ContractError(f"{onnx_path}: its external data cannot be read ({reason(exc)})") from exc
    return proto


def metadata_of(proto: onnx.ModelProto) -> dict[str, str]:
    """The ``metadata_props`` of a loaded model as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (or of the ONNX file an OpenVINO IR came from) as a dict."""
    if kind_for(path).name == "openvino":
        return _read_ir(path)[0]
    return metadata_of(load_onnx(path))


def _read_ir(path: str | Path) -> tuple[dict[str, str], list[int | None]]:
    """An OpenVINO IR's ``san`` runtime info and the dims of its ``images`` input (-1: None)."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: OpenVINO IR file not found")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise ContractError(f"{path}: not a readable OpenVINO IR ({exc})") from exc
    check_ir_weights(path)
    section = root.find(f"rt_info/{IR_SECTION}")
    if root.tag != "net" or section is None:
        raise ContractError(f"{path}: not an OpenVINO IR written by `san-export --openvino` (no rt_info section "
                            f"{IR_SECTION!r})")
    metadata = {child.tag: child.get("value", "") for child in section}
    layer = next((la for la in root.iter("layer") if la.get("type") == "Parameter" and la.get("name") == INPUT_NAME), None)
    dims = [] if layer is None else [None if (size := int(d.text or -1)) < 0 else size for d in layer.iter("dim")]
    return metadata, dims


def contract_from(metadata: Mapping[str, str], inputs: Mapping[str, Sequence[int | None]],
                  where: str | Path) -> tuple[InputSpec, InputConvention]:
    """The input contract and input convention a model's metadata records, checked against its
    ``images`` input (``inputs``: input name -> dims, None for a dynamic one): N x 3 x H x W, or
    as the convention lays it out. The one reading of a contract, whatever holds the metadata
    (an ONNX file, an OpenVINO IR, a runtime's session).

    Raises :class:`ContractError` naming ``where`` when it is missing, invalid or disagrees.
    """
    if METADATA_KEY not in metadata:
        raise ContractError(
            f"{where}: refused: the file carries no input contract ({METADATA_KEY!r} is missing from its "
            "metadata); re-export the model with `san-export --ckpt MODEL.pt`, which writes it"
        )
    try:
        spec = InputSpec.from_json(metadata[METADATA_KEY])
    except ContractError as exc:
        raise ContractError(f"{where}: {exc}") from exc
    if INPUT_NAME not in inputs:
        raise ContractError(f"{where}: the graph has no input named {INPUT_NAME!r} (inputs: {sorted(inputs)})")
    dims = list(inputs[INPUT_NAME])
    convention = _convention(metadata, where)
    expected = convention.dims(spec)
    if dims[1:] != expected:
        raise ContractError(
            f"{where}: graph input {INPUT_NAME!r} has shape {dims}, but the contract says "
            f"N x {' x '.join(map(str, expected))}"
        )
    return spec, convention


def contract_of(proto: onnx.ModelProto, where: str | Path) -> InputSpec:
    """The input contract of a loaded ONNX model (see :func:`contract_from`)."""
    return _onnx_contract(proto, where)[0]


def _onnx_contract(proto: onnx.ModelProto, where: str | Path) -> tuple[InputSpec, InputConvention]:
    inputs = {i.name: [d.dim_value or None for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    return contract_from(metadata_of(proto), inputs, where)


def convention_of(proto: onnx.ModelProto, where: str | Path) -> InputConvention:
    """How a loaded model's ``images`` input is encoded (uint8 RGB NCHW unless recorded)."""
    return _convention(metadata_of(proto), where)


def _convention(metadata: Mapping[str, str], where: str | Path) -> InputConvention:
    text = metadata.get(INPUT_CONVENTION_KEY)
    if text is None:
        return InputConvention()
    try:
        return InputConvention.from_json(text)
    except ContractError as exc:
        raise ContractError(f"{where}: {exc}") from exc


def read_contract(path: str | Path) -> InputSpec:
    """The input contract stored by ``san-export`` in an ONNX file or an OpenVINO IR, checked
    against the ``images`` input (see :func:`contract_from`)."""
    return read_model_contract(path)[0]


def read_model_contract(path: str | Path) -> tuple[InputSpec, InputConvention]:
    """A model file's input contract and input convention, one call for any exported kind
    (ONNX, OpenVINO IR, TensorRT engine: its kind's reader in :data:`ARTIFACT_KINDS`)."""
    kind = kind_for(path)
    if kind.contract is None:
        raise ContractError(f"{path} is {kind.described}, whose contract is in its model config: load it with torch")
    return kind.contract(Path(path))


def _ir_contract(path: Path) -> tuple[InputSpec, InputConvention]:
    metadata, dims = _read_ir(path)
    return contract_from(metadata, {INPUT_NAME: dims} if dims else {}, path)


def _onnx_file_contract(path: Path) -> tuple[InputSpec, InputConvention]:
    return _onnx_contract(load_onnx(path), path)


def _engine_contract(path: Path) -> tuple[InputSpec, InputConvention]:
    sidecar = EngineSidecar.read(path)
    return sidecar.spec, sidecar.convention


def hard_mask_stages(proto: onnx.ModelProto, where: str | Path) -> tuple[int, ...]:
    """Stages whose deployed mask is hard, as recorded at export (:data:`HARD_MASKS_KEY`)."""
    text = metadata_of(proto).get(HARD_MASKS_KEY)
    if text is None:
        raise ContractError(f"{where}: metadata_props[{HARD_MASKS_KEY!r}] is missing; re-export with san-export")
    try:
        stages = tuple(int(s) for s in json.loads(text))
    except (ValueError, TypeError) as exc:
        raise ContractError(f"{where}: metadata_props[{HARD_MASKS_KEY!r}] is not a list of stages ({text!r})") from exc
    return stages


def read_input_convention(path: str | Path) -> InputConvention:
    """The input convention of an ONNX file (metadata), an OpenVINO IR (runtime info) or an engine
    (sidecar provenance)."""
    return read_model_contract(path)[1] if kind_for(path).name != "onnx" else convention_of(load_onnx(path), path)


# -- what a file is -------------------------------------------------------------------------
#: Protobuf tags of ModelProto's fields that follow ``ir_version`` (producer, domain, graph, ...).
_ONNX_FIELD_TAGS = frozenset({0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x5A, 0x62, 0x72, 0x7A})


@dataclass(frozen=True)
class ParityRow:
    """A ``san-parity`` option that adds a row for a file of this kind, judged at ``precision``
    (None: the one its file records)."""

    option: str
    help: str
    precision: str | None = None


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of model file: how it is named and recognised, where its contract is read, what
    runs it by default, and the ``san-parity`` rows it gets. A new kind is one row of
    :data:`ARTIFACT_KINDS` plus its backend (``runtime/``)."""

    name: str
    described: str  # for messages: "an ONNX model"
    suffixes: tuple[str, ...]
    backend: str  # the runtime backend its suffix chooses (runtime.registry.BACKENDS)
    contract: Callable[[Path], tuple[InputSpec, InputConvention]] | None  # None: in the model config
    parity: tuple[ParityRow, ...] = ()


ARTIFACT_KINDS: dict[str, ArtifactKind] = {kind.name: kind for kind in (
    ArtifactKind("checkpoint", "a PyTorch checkpoint", (".pt", ".pth"), "torch", None),
    ArtifactKind("onnx", "an ONNX model", (".onnx",), "onnxruntime", _onnx_file_contract, (
        ParityRow("--onnx", "fp32 (or fp16) ONNX export of --ckpt"),
        ParityRow("--int8", "INT8 Q/DQ ONNX made by san-calibrate", "int8"))),
    ArtifactKind("engine", "a TensorRT engine", (".engine", ".plan"), "tensorrt", _engine_contract, (
        ParityRow("--engine", "TensorRT engine (+ .json sidecar) made by san-export --trt"),)),
    ArtifactKind("openvino", "an OpenVINO IR", (".xml",), "openvino", _ir_contract, (
        ParityRow("--ir", "OpenVINO IR made by san-export --openvino"),)),
)}
#: What each model kind is, for messages.
MODEL_KINDS = {name: kind.described for name, kind in ARTIFACT_KINDS.items()}


def kind_for(path: str | Path) -> ArtifactKind:
    """The kind a file's suffix names (case-insensitive), else the kind its content shows
    (:func:`sniff_model_kind`); ``ValueError`` when neither tells."""
    suffix = Path(path).suffix.lower()
    for kind in ARTIFACT_KINDS.values():
        if suffix in kind.suffixes:
            return kind
    sniffed = sniff_model_kind(path) if Path(path).is_file() else "unknown"
    if sniffed in ARTIFACT_KINDS:
        return ARTIFACT_KINDS[sniffed]
    known = sorted(s for kind in ARTIFACT_KINDS.values() for s in kind.suffixes)
    raise ValueError(f"{path}: cannot tell the kind of model from the suffix {suffix!r}; expected one of {known}")


def sniff_model_kind(path: str | Path) -> str:
    """What a model file is by its content: ``checkpoint`` (a torch zip, or a legacy pickle),
    ``onnx``, ``openvino`` (IR XML), ``engine`` (by suffix: a TensorRT plan has no documented
    magic), ``empty`` or ``unknown``. Cheap: reads the first bytes only."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "checkpoint"
    if len(head) > 2 and head[0] == 0x08 and 1 <= head[1] <= 15 and head[2] in _ONNX_FIELD_TAGS:
        return "onnx"
    if head.lstrip().startswith((b"<?xml", b"<net")):
        return "openvino"
    if Path(path).suffix.lower() in ARTIFACT_KINDS["engine"].suffixes:
        return "engine"
    return "unknown"


# -- any exported artifact -------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """What an exported file says about itself: its precision and the checkpoint it came from."""

    precision: str
    checkpoint_sha256: str | None


def read_provenance(path: str | Path) -> Provenance:
    """The :class:`Provenance` of an ONNX file or OpenVINO IR (metadata) or an engine (sidecar)."""
    if kind_for(path).name == "engine":
        sidecar = EngineSidecar.read(path)
        return Provenance(sidecar.precision, sidecar.provenance.get(CHECKPOINT_SHA_KEY))
    metadata = read_metadata(path)
    return Provenance(metadata.get(PRECISION_KEY, "fp32"), metadata.get(CHECKPOINT_SHA_KEY))


# -- checkpoint headers ----------------------------------------------------------------------
def refused_pickle(path: str | Path, detail: str) -> str:
    """The one message for a checkpoint that holds pickled code or non-weight objects."""
    return (f"{path}: refused: the file contains pickled code or objects that are not plain "
            f"weights ({detail.splitlines()[0] if detail else 'rejected'})")


class _Weights:
    """Stands in for a tensor of a checkpoint read without torch."""

    def __init__(self, *args: object) -> None:
        del args

    def __repr__(self) -> str:
        return "<weights>"


class _HeaderUnpickler(pickle.Unpickler):
    """Reads the pickle of a torch zip checkpoint, allowing only containers and tensor rebuilds;
    storages are never read, and any other global is refused as ``torch.load(weights_only=True)`` would."""

    _ALLOWED = {("collections", "OrderedDict")}
    _TENSOR_BUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if (module, name) in self._TENSOR_BUILDERS or (module == "torch" and name.endswith("Storage")):
            return _Weights
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> _Weights:
        return _Weights()


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """A checkpoint's format, version, config, training and extra records, without torch.

    Tensors come back as placeholders. Raises ``ValueError`` naming the file when it is not
    a torch zip checkpoint or holds anything but plain data and tensors.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            size = archive.getinfo(name).file_size
            if over := exceeds(size, "MAX_CHECKPOINT_RECORD_BYTES"):
                raise ValueError(f"{path}: refused: its record {name} declares {size} bytes, {over}")
            with archive.open(name) as fh:
                payload = _HeaderUnpickler(fh).load()
    except FileNotFoundError:
        raise ValueError(f"{path}: checkpoint file not found") from None
    except pickle.UnpicklingError as exc:
        raise ValueError(refused_pickle(path, str(exc))) from None
    except (zipfile.BadZipFile, StopIteration, EOFError) as exc:
        raise ValueError(f"{path}: truncated or corrupt checkpoint file ({exc or 'no data.pkl'})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a SAN checkpoint (the payload is a {type(payload).__name__})")
    return {k: v for k, v in payload.items() if k != "state_dict"}
