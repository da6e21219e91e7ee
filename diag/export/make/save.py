"""Writes an ONNX model atomically, with its weights as external data when large.

A model is written into a temporary folder next to the destination, under its final
file names (the ``.onnx`` file records the name of its ``.data`` file), then moved
into place with :func:`os.replace`: first the data, then the model. A failure at any
point leaves the destination as it was (no half-written ``.onnx`` or ``.data``) and
removes the temporary folder.

Example::

    >>> import onnx_ir as ir, tempfile, os
    >>> model = ir.Model(ir.Graph([], [], nodes=[]), ir_version=10)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     written = save_model_atomic(model, os.path.join(d, "m.onnx"))
    ...     sorted(os.listdir(d))
    ['m.onnx']
"""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx_ir as ir

from diag.helpers.atomic_write import check_file_destination

# above this total size of the weights, they go to a ``.data`` file next to the model
# (an ONNX protobuf cannot exceed 2 GB, and a separate file loads faster)
EXTERNAL_DATA_THRESHOLD = 100 * 2**20
# tensors smaller than this stay inside the ``.onnx`` even with external data
_SMALL_TENSOR = 1024


def weights_size(model: ir.Model) -> int:
    """Total size in bytes of the initializers of the main graph."""
    return sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )


def data_filename(filename: str | os.PathLike) -> str:
    """Name of the external data file of ``filename`` (``model.onnx.data``)."""
    return os.path.basename(os.fspath(filename)) + ".data"


def save_model_atomic(
    model: ir.Model,
    filename: str | os.PathLike,
    external_data: bool | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> list[str]:
    """Saves ``model`` to ``filename`` atomically and returns the files written.

    :param model: the model (:class:`onnx_ir.Model`), left unchanged
    :param filename: destination ``.onnx`` file; its folder is created if needed
    :param external_data: True / False forces the weights out / in; None puts them in
        ``<filename>.data`` when they weigh more than ``external_data_threshold``
    :param external_data_threshold: bytes
    :return: the paths written (the model, then its data file when any)

    A stale ``.data`` file of a previous save that had external data is removed when
    the new model keeps its weights inside.
    """
    filename = check_file_destination(filename)
    folder = os.path.dirname(filename)
    os.makedirs(folder, exist_ok=True)
    if external_data is None:
        external_data = weights_size(model) > external_data_threshold
    data_name = data_filename(filename)
    base = os.path.basename(filename)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=folder)
    try:
        tmp_model = os.path.join(tmp, base)
        if external_data:
            ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=_SMALL_TENSOR)
        else:
            ir.save(model, tmp_model)
        written = [filename]
        final_data = os.path.join(folder, data_name)
        if external_data:
            os.replace(os.path.join(tmp, data_name), final_data)
            written.append(final_data)
        # the model last: once it is in place, its data is too
        os.replace(tmp_model, filename)
        if not external_data and os.path.exists(final_data):
            os.remove(final_data)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
