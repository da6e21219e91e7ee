"""The files a model is read from: an ``.onnx`` graph and the JSON files other tools
write next to it, loaded with an error that names the file and what to do instead of
protobuf's ``DecodeError`` or ``json``'s ``JSONDecodeError``.

Example::

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> _ = open(path, "w").write("not a graph")
    >>> try:
    ...     load_onnx(path)
    ... except ModelFileError as e:
    ...     print(str(e).split(";")[0])
    ... # doctest: +ELLIPSIS
    '...model.onnx' is not an ONNX model (...)
"""

from __future__ import annotations

import json
import os
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from diag.contract.read import ContractError


class ModelFileError(ContractError):
    """A model file that is missing, a folder, empty, truncated or not of its format."""


def _existing_file(path: str, what: str, fix: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path!r}; {fix}.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder where the {what} should be; {fix}.")


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = False) -> onnx.ModelProto:
    """The graph of the ``.onnx`` file ``path`` (its weights too with
    ``load_external_data=True``). Raises FileNotFoundError / IsADirectoryError, or
    :class:`ModelFileError` for an empty, truncated or non-ONNX file or one without a
    graph."""
    path = os.fspath(path)
    fix = "export one with diag.export_causal_lm or give the path of an .onnx file"
    _existing_file(path, "ONNX file", fix)
    again = (
        "export it again (diag.export_causal_lm) or copy it again: the copy may have "
        "stopped before the end"
    )
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path!r} is empty (0 bytes), not an ONNX model; {again}.")
    try:
        model = onnx.load(path, load_external_data=load_external_data)
    except DecodeError as exc:
        raise ModelFileError(
            f"{path!r} is not an ONNX model (truncated, or another kind of file: "
            f"protobuf says {exc}); {again}."
        ) from exc
    except onnx.checker.ValidationError as exc:
        # onnx refuses a weights file with several hard links (a guard against
        # hardlink attacks): a folder copied with `cp -l` or `ln` cannot be loaded
        if "hard link" not in str(exc):
            raise ModelFileError(f"onnx refuses to load {path!r}: {exc}; {again}.") from exc
        raise ModelFileError(
            f"the weights of {path!r} are in a file with several hard links, which onnx "
            "refuses to load; copy the folder with `cp` (not `cp -l` or `ln`) or remove the "
            f"other links (onnx says: {exc})."
        ) from exc
    if not model.HasField("graph") or not model.graph.output:
        raise ModelFileError(f"{path!r} holds no ONNX graph with outputs; {again}.")
    return model


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, ``what`` naming the file in errors (``"the
    onnxruntime-genai config"``). Raises :class:`ModelFileError` for a file that is not
    a JSON object."""
    path = os.fspath(path)
    _existing_file(path, what, "write it again with the tool that made the folder")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{what} {path!r} is not valid JSON ({exc}); write it again with the tool "
            "that made the folder."
        ) from exc
    if not isinstance(value, dict):
        raise ModelFileError(
            f"{what} {path!r} holds a JSON {type(value).__name__}, not an object; write it "
            "again with the tool that made the folder."
        )
    return value


__all__ = ["ModelFileError", "load_onnx", "read_json"]
