"""Reading what the toolkit writes, without torch: names, metadata keys, contracts, provenance.

Three artifact kinds carry a model and its input contract (:class:`san.spec.InputSpec`):

- a checkpoint (``.pt``): weights, model config, contract, training state
  (:mod:`san.checkpoint`; :func:`read_checkpoint_header` reads all but the weights);
- an ONNX file: the contract and provenance in ``metadata_props`` under the keys below,
  input ``images`` (uint8 RGB NCHW), output ``embeddings``;
- a TensorRT engine: the same facts in a JSON sidecar ``<engine>.json``;
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx.external_data_helper import load_external_data_for_model

from san.confinement import check_external_data, check_ir_weights
from san.error_reason import reason
from san.input_convention import InputConvention
from san.limits import exceeds
from san.spec import METADATA_KEY, ContractError, InputSpec

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
#: How the ``images`` input is encoded (:class:`san.input_convention.InputConvention`); absent: uint8 RGB NCHW.
INPUT_CONVENTION_KEY = "san.input_convention"

CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
IR_SUFFIXES = (".xml",)
#: The runtime-info section of an OpenVINO IR that holds the ONNX file's ``metadata_props``.
IR_SECTION = "san"

SIDECAR_FORMAT = "san-tensorrt-engine"
SIDECAR_VERSION = 1


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
    if Path(path).suffix.lower() in IR_SUFFIXES:
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
    (ONNX, OpenVINO IR, TensorRT engine); the file is read once."""
    path = Path(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        sidecar = read_sidecar(path)
        try:
            return InputSpec.from_dict(sidecar[METADATA_KEY]), read_input_convention(path)
        except (KeyError, TypeError) as exc:
            raise ContractError(f"{sidecar_path(path)}: no valid input contract under {METADATA_KEY!r} ({exc})") from exc
    if path.suffix.lower() in IR_SUFFIXES:
        metadata, dims = _read_ir(path)
        return contract_from(metadata, {INPUT_NAME: dims} if dims else {}, path)
    return _onnx_contract(load_onnx(path), path)


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


# -- TensorRT engine sidecars ----------------------------------------------------------------
def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path``; raises ``FileNotFoundError``/``ValueError`` naming it."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: engine sidecar not found (written by `san-export --trt` beside the engine)")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a SAN engine sidecar (expected format {SIDECAR_FORMAT!r})")
    return sidecar


def read_input_convention(path: str | Path) -> InputConvention:
    """The input convention of an ONNX file (metadata), an OpenVINO IR (runtime info) or an engine
    (sidecar provenance)."""
    path = Path(path)
    if path.suffix.lower() in IR_SUFFIXES:
        return _convention(read_metadata(path), path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        text = read_sidecar(path).get("provenance", {}).get(INPUT_CONVENTION_KEY)
        try:
            return InputConvention() if text is None else InputConvention.from_json(text)
        except ContractError as exc:
            raise ContractError(f"{sidecar_path(path)}: {exc}") from exc
    return convention_of(load_onnx(path), path)


# -- what a file is -------------------------------------------------------------------------
#: Protobuf tags of ModelProto's fields that follow ``ir_version`` (producer, domain, graph, ...).
_ONNX_FIELD_TAGS = frozenset({0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x5A, 0x62, 0x72, 0x7A})


#: What each model kind of :func:`sniff_model_kind` is, for messages.
MODEL_KINDS = {"checkpoint": "a PyTorch checkpoint", "onnx": "an ONNX model", "engine": "a TensorRT engine",
               "openvino": "an OpenVINO IR"}


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
    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
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
    path = Path(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        sidecar = read_sidecar(path)
        return Provenance(sidecar.get("precision", "fp32"), sidecar.get("provenance", {}).get(CHECKPOINT_SHA_KEY))
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
