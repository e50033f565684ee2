"""The JSON sidecar ``san-export --trt`` writes beside a TensorRT engine, as one typed record
(torch-free): the engine's input contract and convention, precision, batch profile, the GPU and
TensorRT it was built for, and the ONNX file's provenance.

An engine has no metadata of its own, so this file is what every reader of an engine reads:
:meth:`EngineSidecar.read` checks each field's type once, and nothing else parses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from san.contract.input_convention import INPUT_CONVENTION_KEY, InputConvention
from san.contract.json_record import read_record
from san.contract.spec import METADATA_KEY, ContractError, InputSpec
from san.contract.tensorrt_target import TargetEnvironment
from san.io.atomic import atomic_write_json

SIDECAR_FORMAT = "san-tensorrt-engine"
SIDECAR_VERSION = 1


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class BatchProfile:
    """The engine's optimization profile: batch sizes it accepts (min..max), tuned for opt."""

    min: int = 1
    opt: int = 32
    max: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"--min-batch {self.min}, --opt-batch {self.opt}, --max-batch {self.max}: the batch profile needs "
                "1 <= min <= opt <= max"
            )


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine is: read once from its sidecar, written once by the build."""

    spec: InputSpec
    convention: InputConvention
    precision: str  # fp32, tf32, fp16 or int8
    tf32: bool
    version_compatible: bool
    batch: BatchProfile
    built_for: TargetEnvironment
    onnx_sha256: str
    engine_sha256: str
    #: The ONNX file's metadata, its contract left out (the checkpoint's hash, the convention, ...).
    provenance: dict[str, str]

    def input_dims(self) -> list[int]:
        """The engine's input dims after the batch: 3 x H x W, or as the convention lays them out."""
        return self.convention.dims(self.spec)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON object."""
        return {
            "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, METADATA_KEY: self.spec.to_dict(),
            "precision": self.precision, "tf32": self.tf32, "version_compatible": self.version_compatible,
            "profile": asdict(self.batch), **asdict(self.built_for), "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256, "provenance": self.provenance,
        }

    def write(self, engine_path: str | Path) -> Path:
        """Write the sidecar of ``engine_path`` atomically; its path."""
        path = sidecar_path(engine_path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, engine_path: str | Path) -> EngineSidecar:
        """The sidecar of ``engine_path``; :class:`ContractError` naming the file and the field
        that is missing or of the wrong type."""
        path = sidecar_path(engine_path)
        data = read_record(path, format=SIDECAR_FORMAT, limit="MAX_SIDECAR_BYTES", what="SAN engine sidecar",
                           written_by="written by `san-export --trt` beside the engine", error=ContractError)
        try:
            return cls._from_dict(data)
        except ContractError as exc:
            raise ContractError(f"{path}: {exc}") from exc

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> EngineSidecar:
        def field(name: str, kind: type | tuple[type, ...], within: Mapping[str, Any] = data) -> Any:
            value = within.get(name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ContractError(f"field {name!r} is missing or not a {getattr(kind, '__name__', kind)} ({value!r})")
            return value

        spec = InputSpec.from_dict(field(METADATA_KEY, dict))
        provenance = field("provenance", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in provenance.items()):
            raise ContractError("field 'provenance' must map names to strings")
        text = provenance.get(INPUT_CONVENTION_KEY)
        convention = InputConvention() if text is None else InputConvention.from_json(text)
        profile = field("profile", dict)
        low, opt, high = (field(name, int, profile) for name in ("min", "opt", "max"))
        if not 1 <= low <= opt <= high:
            raise ContractError(f"field 'profile': batch {low}..{high} (opt {opt}) is not 1 <= min <= opt <= max")
        batch = BatchProfile(low, opt, high)
        built_for = TargetEnvironment(field("tensorrt_version", str), field("gpu_name", str),
                                      field("compute_capability", str))
        return cls(spec, convention, field("precision", str), field("tf32", bool), field("version_compatible", bool),
                   batch, built_for, field("onnx_sha256", str), field("engine_sha256", str), dict(provenance))
