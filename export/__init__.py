"""Export a trained SAN: checkpoint -> ONNX (deterministic masks, contract inside),
verified against PyTorch with onnxruntime, and ONNX -> TensorRT engine (+ JSON sidecar).

Modules: :mod:`export.onnx_export` (``export_onnx``, ``read_contract``; torch-free at
import), :mod:`export.verify` (``verify_onnx``), :mod:`export.tensorrt_build`
(``build_engine``, ``check_engine_compatible``; torch-free), :mod:`export.cli`
(``san-export``).
"""
