"""Optional dependencies: which extra installs each, and the one-line error when one is missing.

``pip install '.[cpu]'`` (or a GPU extra, which brings onnxruntime-gpu instead) is the
torch-free edge install (embed, search, INT8 calibration, the TensorRT parser check); the
other extras add the rest.
"""

from __future__ import annotations

#: Top-level module -> the extra that installs it.
EXTRAS = {
    "onnxruntime": "cpu",
    "torch": "train",
    "torchvision": "train",
    "onnxscript": "train",
    "tensorrt": "gpu-cu12",
    "pycuda": "gpu-cu12",
    "faiss": "search",
    "matplotlib": "search",
    "ray": "cluster",
    "openvino": "openvino",
}


def missing_extra(exc: ImportError) -> str | None:
    """A one-line message naming the extra that provides the missing module, or None when
    the module is not an optional dependency of the toolkit."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    hint = {"gpu-cu12": "'.[gpu-cu12]' or '.[gpu-cu13]'",
            "cpu": "'.[cpu]' (on a GPU box '.[gpu-cu12]' or '.[gpu-cu13]', which bring onnxruntime-gpu)"
            }.get(extra, f"'.[{extra}]'")
    return f"{name} is not installed: pip install {hint} (from the repository)"
