"""Runtime errors reduced to one line: each runtime's real error, its reason kept, its C++
source locations dropped."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from san.io.error_reason import MAX_REASON, reason

LOCATION = re.compile(r"\.(?:c|cc|cpp|cxx|h|hpp):\d+")


def _openvino(tmp_path: Path) -> None:
    import openvino as ov

    (tmp_path / "bad.xml").write_text('<net name="x" version="11"><layers><layer id="0" type="Foo"/></layers></net>')
    ov.Core().read_model(str(tmp_path / "bad.xml"))


def _onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    (tmp_path / "junk.onnx").write_bytes(bytes(range(256)) * 4)
    ort.InferenceSession(str(tmp_path / "junk.onnx"), providers=["CPUExecutionProvider"])


def _faiss(tmp_path: Path) -> None:
    import faiss

    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).random((100, 8), dtype=np.float32))
    faiss.write_index(index, str(tmp_path / "whole.index"))
    (tmp_path / "cut.index").write_bytes((tmp_path / "whole.index").read_bytes()[:500])
    faiss.read_index(str(tmp_path / "cut.index"))


def _onnx_converter(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, version_converter

    tensor = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Split", ["x"], ["a", "b"], num_outputs=2, axis=0)], "g",
                              [tensor("x", TensorProto.FLOAT, [4])],
                              [tensor("a", TensorProto.FLOAT, [2]), tensor("b", TensorProto.FLOAT, [2])])
    version_converter.convert_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), 17)


#: runtime -> (what raises its error, words of the reason it gives)
RUNTIMES: dict[str, tuple[Callable[[Path], None], str]] = {
    "openvino": (_openvino, "missing mandatory attribute: version"),
    "onnxruntime": (_onnxruntime, "Protobuf parsing failed"),
    "faiss": (_faiss, "read error in"),
    "onnx version converter": (_onnx_converter, "No Adapter From Version $18 for Split"),
}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_a_runtime_error_keeps_its_reason_on_one_line_without_source_locations(runtime: str, tmp_path: Path) -> None:
    raises, words = RUNTIMES[runtime]
    with pytest.raises(Exception) as caught:
        raises(tmp_path)
    assert LOCATION.search(str(caught.value)) or "\n" in str(caught.value) or "[ONNXRuntimeError]" in str(caught.value)
    line = reason(caught.value)
    assert words in line and "\n" not in line and not LOCATION.search(line), line
    assert "[ONNXRuntimeError]" not in line and not line.startswith("Error in ")


def test_an_empty_message_gives_the_type_and_a_long_one_is_cut() -> None:
    assert reason(MemoryError()) == "MemoryError"
    long = reason(RuntimeError("x" * 5000))
    assert len(long) == MAX_REASON and long.endswith("…")
