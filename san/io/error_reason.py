"""One line that keeps a runtime's reason for an error and drops where in its C++ it was raised.

OpenVINO puts one "Exception from src/...cpp:84:" line per layer before the reason,
onnxruntime a status prefix and "file.cc:619 Function" before it, FAISS the signature of the
function and its source line, ONNX's converter a header path. Torch-free.
"""

from __future__ import annotations

import re

#: The longest reason kept; a runtime that explains at length is cut there, with an ellipsis.
MAX_REASON = 500

_NOISE = (
    re.compile(r"\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : "),  # onnxruntime's status
    re.compile(r"Error in .*? at \S+:\d+: "),  # FAISS: function signature and source line
    re.compile(r"Exception from \S+:\d+:"),  # OpenVINO: one per layer it passed through
    re.compile(r"Check '.*?' failed at \S+:\d+:"),  # OpenVINO's assertions
    re.compile(r"\S+\.(?:c|cc|cpp|cxx|h|hpp)(?::\d+)+:?(?: [A-Z]\w+(?= ))?"),  # any source location left
)


def reason(error: BaseException) -> str:
    """``error``'s message on one line, without source locations; its type's name when empty."""
    text = str(error)
    for pattern in _NOISE:
        text = pattern.sub(" ", text)
    text = " ".join(text.split()).strip(" :")
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1].rstrip() + "…"
    return text or type(error).__name__
