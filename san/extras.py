"""Optional dependencies: which extra installs each, and the one-line error when one is missing.

``pip install .`` is the torch-free edge install (embed, search, INT8 calibration, the
TensorRT parser check); the extras add the rest.
"""

from __future__ import annotations

#: Top-level module -> the extra that installs it.
EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "onnxscript": "train",
    "tensorrt": "gpu-cu12",
    "pycuda": "gpu-cu12",
    "faiss": "search",
    "matplotlib": "search",
    "ray": "cluster",
}


def missing_extra(exc: ImportError) -> str | None:
    """A one-line message naming the extra that provides the missing module, or None when
    the module is not an optional dependency of the toolkit."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    hint = "'.[gpu-cu12]' or '.[gpu-cu13]'" if extra.startswith("gpu") else f"'.[{extra}]'"
    return f"{name} is not installed: pip install {hint} (from the repository)"
