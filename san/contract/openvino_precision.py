"""The precision-sensitive nodes of an OpenVINO model kept in f32 at bf16 or fp16 (torch-free;
needs the ``openvino`` extra).

OpenVINO's mechanism for such nodes is the runtime attribute ``DisableFP16Compression``
(``src/common/transformations/include/transformations/rt_info/disable_fp16_compression.hpp``;
in an IR, ``<attribute name="precise" version="0"/>`` in a layer's ``rt_info``). The CPU plugin
keeps a node so marked at its original precision when it lowers the rest of the graph to the
inference precision hint (``Node::keepOrigPrecision``, set in ``src/plugins/intel_cpu/src/node.cpp``
and read by ``Graph::EnforceInferencePrecision``); the fp16 conversion for GPUs skips it too.

Marking the nodes alone is not enough, because the attribute is not copyable: a node that a
transformation makes out of a marked one is unmarked. OpenVINO rewrites Divide as a Multiply by a
Power of -1 (``ConvertDivide``) and Subtract as an Add of a Multiply by -1 (``ConvertSubtract``);
the CPU plugin turns an element-wise op with a scalar constant into a node of its own and fuses
chains of element-wise ops into one node that takes its first member's precision. Measured on
OpenVINO 2026.4, the marked normalisations of Eq. 3 then still ran in bf16. So :func:`keep_in_f32`
first writes each marked Divide and Subtract as OpenVINO would (``x * r**-1``, ``a + b * -1``:
in f32, the arithmetic OpenVINO's own conversion runs), with the constant shaped per channel so
that no scalar constant is left to become an unmarked node, and marks the new nodes too.

An rt_info key set from Python is a plain value that the plugins do not read (setting
``precise_0`` changed nothing), so the attribute is written where OpenVINO reads it: the IR.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import openvino as ov

#: The IR's spelling of ``DisableFP16Compression``.
PRECISE = {"name": "precise", "version": "0"}


def keep_in_f32(model: ov.Model, names: Collection[str]) -> ov.Model:
    """``model`` with the nodes named ``names`` (ONNX node names, which OpenVINO's ONNX reader
    keeps as friendly names) kept in f32 at any inference precision (see the module docstring)."""
    import openvino as ov
    import openvino.properties as props

    marked = prepare_marks(model, names)
    with tempfile.TemporaryDirectory(prefix="san-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        mark_precise(xml, marked)
        core = ov.Core()
        core.set_property({props.enable_mmap: False})  # the weights are read before the folder goes
        return core.read_model(str(xml))


def mark_precise(xml: Path, names: Collection[str]) -> int:
    """Add the ``precise`` attribute to the layers of the IR ``xml`` named ``names``, in place;
    the number of layers marked."""
    tree = ET.parse(xml)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") not in names:
            continue
        info = layer.find("rt_info")
        if info is None:
            info = ET.SubElement(layer, "rt_info")
        if not any(a.get("name") == PRECISE["name"] for a in info.iter("attribute")):
            ET.SubElement(info, "attribute", PRECISE)
        marked += 1
    tree.write(xml, encoding="utf-8", xml_declaration=True)
    return marked


def prepare_marks(model: ov.Model, names: Collection[str]) -> set[str]:
    """Rewrite the named Divide and Subtract ops of ``model`` as OpenVINO decomposes them, with
    per-channel constants (in place); the layer names to mark in its IR (``names`` and the new
    nodes')."""
    import openvino.opset13 as ops

    marked = set(names)
    for op in model.get_ordered_ops():
        name, kind = op.get_friendly_name(), op.get_type_name()
        if name not in marked or kind not in ("Divide", "Subtract"):
            continue
        left, right = op.input_value(0), op.input_value(1)
        minus_one = ops.constant(np.full(_per_channel(right), -1.0, np.float32))
        if kind == "Divide":
            inner, outer = ops.power(right, minus_one), ops.multiply
        else:
            inner, outer = ops.multiply(right, minus_one), ops.add
        inner.set_friendly_name(f"{name}/{'reciprocal' if kind == 'Divide' else 'negated'}")
        rewritten = outer(left, inner)
        rewritten.set_friendly_name(name)
        op.output(0).replace(rewritten.output(0))
        marked.add(inner.get_friendly_name())
    return marked


def _per_channel(value: ov.Output) -> list[int]:
    """(1, C, 1, ...) for a value of static channel count C and rank >= 2, else (1,)."""
    shape = value.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() < 2 or shape[1].is_dynamic:
        return [1]
    return [1, shape[1].get_length()] + [1] * (shape.rank.get_length() - 2)
