"""Exported graphs altered at a known point, for checks that must catch them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from san.contract.artifact import OUTPUT_NAME
from san.contract.onnx_graph import mask_tensors


def tampered_block(source: Path, out: Path, stage: int, how: str) -> Path:
    """A copy of ``source`` whose block after ``stage`` is altered: its threshold constant
    set to 0.6 (``threshold``), its F = (1 + M) T replaced by T (``bypassed``), or that and
    every node left dead removed (``removed``)."""
    model = onnx.load(source)
    graph = model.graph
    mask = mask_tensors(model, [stage])[stage]
    compare = next(n for n in graph.node if mask in n.output)
    if how == "threshold":
        name = f"tampered_threshold_{stage}"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.6, dtype=np.float32), name))
        compare.input[1] = name  # this block only: exporters share equal constants between blocks
    else:
        cast = next(n for n in graph.node if mask in n.input)
        mul = next(n for n in graph.node if cast.output[0] in n.input)
        add = next(n for n in graph.node if mul.output[0] in n.input)  # F = T + M * T
        feature = next(i for i in add.input if i != mul.output[0])
        add.op_type, add.input[:] = "Identity", [feature]
        if how == "removed":
            del graph.output[1:]  # pi_<stage> outputs would keep the dead path alive
            while dead := [n for n in graph.node if not any(o in {i for m in graph.node for i in m.input}
                                                            or o == OUTPUT_NAME for o in n.output)]:
                for n in dead:
                    graph.node.remove(n)
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return out
