"""Deliberately broken INT8 files, each a known way quantization goes wrong.

- :func:`quantize_everything`: onnxruntime's quantizer on its own, without the float mask
  path, float stem or float head that ``san-calibrate`` keeps: the min-max normalisation
  input X of every attention block gets one per-tensor scale, and hard masks flip.
- :func:`scale_activation_ranges`: a healthy Q/DQ file whose activation ranges are all
  ``factor`` times too wide (a calibration that saw the wrong data or wrong units): every
  activation keeps a tenth of its levels.
- :func:`scale_one_weight`: a healthy Q/DQ file with one convolution's weight scale
  ``factor`` times too large (a scale written for another layer, or in other units): that
  layer's output grows ``factor``-fold and every later block sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from calibration.quantize import ImageReader
from san.contract.artifact import PRECISION_KEY, read_contract


def quantize_everything(fp32: Path, images: Sequence[Path], out: Path) -> Path:
    """``quantize_static`` on the whole graph (uint8 activations, int8 per-channel weights)."""
    reader = ImageReader(images, read_contract(fp32), batch_size=4, progress=False)
    quantize_static(fp32, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"WeightSymmetric": True})
    model = onnx.load(out)
    for prop in model.metadata_props:
        if prop.key == PRECISION_KEY:
            prop.value = "int8"
    onnx.save(model, out)
    return out


def scale_activation_ranges(int8: Path, out: Path, factor: float) -> Path:
    """A copy of ``int8`` with the scale of every activation QuantizeLinear (shared with its
    DequantizeLinear) multiplied by ``factor``."""
    model = onnx.load(int8)
    initializers = {t.name: t for t in model.graph.initializer}
    scales = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers}
    assert scales, f"{int8}: no activation QuantizeLinear"
    for name in scales:
        scaled = numpy_helper.to_array(initializers[name]) * np.float32(factor)
        initializers[name].CopyFrom(numpy_helper.from_array(scaled, name))
    onnx.save(model, out)
    return out


def scale_one_weight(int8: Path, out: Path, weight: str, factor: float) -> Path:
    """A copy of ``int8`` whose DequantizeLinear of the initializer ``weight`` (its quantized
    tensor, e.g. ``san.stages.3.0.downsample.0.weight_quantized``) has its scale multiplied by
    ``factor``."""
    model = onnx.load(int8)
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == weight]
    assert len(nodes) == 1, f"{int8}: {len(nodes)} DequantizeLinear nodes read {weight}"
    scale = initializers[nodes[0].input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    onnx.save(model, out)
    return out
