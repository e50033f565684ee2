"""SAN -> ONNX: the eval-mode graph (hard masks, no random ops) carrying its input contract.

The graph takes ``images``: uint8 RGB NCHW at the contract's height x width (0..255, the
output of :func:`san.io.preprocess.load_image`); it casts to float and applies mean/std
itself. It returns ``embeddings``: float32 [N, embedding_dim]. Only uint8 enters the graph:
one input type keeps every backend and the TensorRT profile simple, and it is 4x less
data to copy to a GPU than float32.

The normalised attention probabilities of each block are named ``pi_<stage>`` inside the
graph; ``with_masks=True`` also lists them as outputs. The deployed file lists only
``embeddings``, and :mod:`export.verify` exposes the named tensors again in memory to count
mask flips on exactly the deployed nodes.

The names and metadata keys are :mod:`san.contract.artifact`'s, which reads them back without torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import onnx
import torch
from torch import Tensor, nn

from export.errors import ExportError
from san.contract.artifact import (
    BATCH_DIM,
    CONFIG_KEY,
    EXPORTER_KEY,
    HARD_MASKS_KEY,
    INPUT_CONVENTION_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    PRECISION_KEY,
    TORCH_VERSION_KEY,
    pi_name,
)
from san.contract.input_convention import InputConvention
from san.contract.spec import METADATA_KEY
from san.io.atomic import atomic_write

if TYPE_CHECKING:
    from san.model.network import SAN

#: Ops that would make the graph non-deterministic; none may appear in an export.
RANDOM_OPS = frozenset(
    {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli", "Multinomial"}
)
#: The dynamo exporter implements opset 18 and newer; callers may ask for 17 or newer.
MIN_OPSET, EXPORTER_MIN_OPSET = 17, 18
PRECISIONS = ("fp32", "fp16")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def export_onnx(
    model: SAN,
    out: str | Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    provenance: dict[str, str] | None = None,
    with_masks: bool = False,
    precision: str = "fp32",
    convention: InputConvention = InputConvention(),
) -> Path:
    """Export ``model``'s eval-mode graph to ``out`` (atomically) and return the path.

    ``opset`` is the lowest acceptable default-domain opset (>= 17); the dynamo exporter
    writes ``max(opset, 18)``. ``dynamic_batch=False`` fixes the batch at 1.
    ``provenance`` adds string ``metadata_props`` (e.g. ``san.checkpoint_sha256``); the
    contract, model config, torch version and exporter are always written.
    ``precision="fp16"`` exports a half-precision graph (uint8 in, float32 out) for
    strongly typed TensorRT FP16 engines. The file passes ``onnx.checker`` (full check,
    with shape inference) and contains no random op, or nothing is written. ``convention``
    puts an input adapter in front of the model (:mod:`san.contract.input_convention`): the graph then
    takes that encoding and maps it back to the model's 0..255 RGB NCHW inside.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    opset = max(opset, EXPORTER_MIN_OPSET)
    spec = model.spec
    stages = model.cfg.active_stages
    device = next(model.parameters()).device
    # Batch 2 in the example: torch.export specialises a dimension of size 1.
    example = torch.zeros((2 if dynamic_batch else 1, *convention.dims(spec)), dtype=getattr(torch, convention.dtype),
                          device=device)
    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM, min=1)},) if dynamic_batch else None
    with eval_mode(model), torch.no_grad():
        program = torch.onnx.export(
            _eval_graph(model, half=precision == "fp16", convention=convention).eval(),
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, *(pi_name(s) for s in stages)],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    _shapes_from_cast_input(proto)
    if not with_masks:
        _keep_outputs(proto, {OUTPUT_NAME})
    metadata = {
        METADATA_KEY: spec.to_json(),
        CONFIG_KEY: json.dumps(model.cfg.to_dict(), sort_keys=True),
        TORCH_VERSION_KEY: torch.__version__,
        EXPORTER_KEY: f"torch.onnx.export(dynamo=True), opset {opset}",
        PRECISION_KEY: precision,
        HARD_MASKS_KEY: json.dumps(sorted(model.hard_mask_stages())),
        **({} if convention.is_default else {INPUT_CONVENTION_KEY: convention.to_json()}),
    }
    clash = sorted(set(provenance or {}) & set(metadata))
    if clash:
        raise ValueError(f"provenance may not override {clash}; those keys are written by export_onnx")
    _set_metadata(proto, {**metadata, **(provenance or {})})
    proto.graph.doc_string = (
        f"{INPUT_NAME}: {convention.describe()} [N, {', '.join(map(str, convention.dims(spec)))}], resized "
        f"with {spec.interpolation} (the model's normalisation is inside); {OUTPUT_NAME}: float32 "
        f"[N, {spec.embedding_dim}]"
    )
    check_graph(proto)
    out = Path(out)
    atomic_write(out, lambda tmp: onnx.save_model(proto, tmp))
    return out


def _eval_graph(model: SAN, half: bool, convention: InputConvention) -> nn.Module:
    """Wrap ``model`` so the traced forward takes ``convention``'s input and returns
    (embeddings, pi_1, ...) as float32."""
    import copy

    from san.model.context import NearestUpsample

    scale, offset = (torch.from_numpy(v).view(1, 3, 1, 1) for v in convention.pixel_affine())

    class EvalGraph(nn.Module):
        def __init__(self, san: SAN) -> None:
            super().__init__()
            self.san = san
            self.scale: Tensor
            self.offset: Tensor
            self.register_buffer("scale", scale, persistent=False)
            self.register_buffer("offset", offset, persistent=False)

        def forward(self, images: Tensor) -> tuple[Tensor, ...]:
            # float first: TensorRT takes a UINT8 input only into a Cast
            x = images if convention.is_default else images.float()
            x = x.permute(0, 3, 1, 2) if convention.layout == "NHWC" else x  # N x C x H x W
            if convention.normalized:
                x = x * self.scale + self.offset  # back to pixels, 0..255
            if convention.channels == "BGR":
                x = x.flip(1)  # to RGB
            out = self.san(x, details=True)
            return (out.embeddings.float(), *(p.float() for p in out.probs))

    nearest = [name for name, module in model.named_modules() if isinstance(module, NearestUpsample)]
    san = copy.deepcopy(model) if half or nearest else model
    for name in nearest:  # one ConvTranspose node each, its weights an initializer
        san.set_submodule(name, cast(NearestUpsample, san.get_submodule(name)).as_conv_transpose())
    graph = EvalGraph(san.half() if half else san)
    return graph.to(next(model.parameters()).device)


def _shapes_from_cast_input(proto: onnx.ModelProto) -> None:
    """Make Shape nodes read the input's Cast instead of the input itself.

    The exporter may take the batch size from ``images`` directly; TensorRT's parser takes a
    UINT8 input only into a Cast, and the Cast's output has the same shape.
    """
    cast = next((n for n in proto.graph.node if n.op_type == "Cast" and n.input[0] == INPUT_NAME), None)
    readers = [n for n in proto.graph.node if n.op_type == "Shape" and n.input[0] == INPUT_NAME]
    if cast is None or not readers:
        return
    for node in readers:
        node.input[0] = cast.output[0]
    nodes = [cast, *(n for n in proto.graph.node if n is not cast)]  # the Cast reads only the input: first
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _keep_outputs(proto: onnx.ModelProto, names: set[str]) -> None:
    """Drop graph outputs not in ``names``; their tensors keep their names inside."""
    kept = [o for o in proto.graph.output if o.name in names]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)


def _set_metadata(proto: onnx.ModelProto, entries: dict[str, str]) -> None:
    for key, value in entries.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
        proto.metadata_props.add(key=key, value=value)


def check_graph(proto: onnx.ModelProto) -> None:
    """Raise :class:`ExportError` unless the graph is valid (full check) and has no random op."""
    found = sorted(random_ops(proto))
    if found:
        raise ExportError(f"the exported graph contains random ops {found}; eval-mode SAN must be deterministic")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc


def random_ops(proto: onnx.ModelProto) -> set[str]:
    """Random op types anywhere in the model: main graph, subgraphs and local functions."""
    found: set[str] = set()

    def visit(nodes: Iterable[onnx.NodeProto]) -> None:
        for node in nodes:
            if node.op_type in RANDOM_OPS:
                found.add(node.op_type)
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                    visit(sub.node)

    visit(proto.graph.node)
    for function in proto.functions:
        visit(function.node)
    return found
