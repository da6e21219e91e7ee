"""Writes the intersphinx inventories ``conf.py`` reads, so that the docs build links
torch, transformers, onnx... names without reaching the network.

A project that publishes no inventory on this machine gets one written from the names
diag's documentation refers to (:data:`PROJECTS`): each name is imported from the
installed package (a name that no longer exists fails the script), its role (class,
function, module...) read from the object, and its link is the page of the project's
own documentation that documents it. The path the object is defined under is written
too when it differs (``torch.nn.modules.module.Module`` for ``torch.nn.Module``),
because autodoc writes a type hint by that path.

Python's inventory is the one Debian ships in ``python3.11-doc``, extracted as is::

    apt-get download python3.11-doc
    python _doc/make_inventories.py --python-doc python3.11-doc_*.deb

Run ``python _doc/make_inventories.py`` again when a reference to a new external
name shows up in the nitpicky build (``sphinx -n``): add the name and its page to
:data:`PROJECTS` first. The ``.inv`` files are kept in the repository
(``_doc/inventories/``), so the build is offline and the same on every machine.

Example (the line an inventory holds for one name)::

    >>> inventory_lines("numpy", {"numpy.ndarray": "reference/generated/numpy.ndarray.html"})
    ['numpy.ndarray py:class 1 reference/generated/numpy.ndarray.html#$ -']
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import os
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repository: ``import diag``

from diag.helpers.atomic_write import write_atomically  # noqa: E402

INVENTORIES = os.path.join(_HERE, "inventories")
PYTHON_DOCS = "https://docs.python.org/3.11/"  # the release of Debian's python3.11-doc


@dataclass(frozen=True)
class Project:
    """A project's documentation and the names diag's docs link into it.

    :param url: the root of its documentation (what intersphinx prefixes to a link)
    :param distribution: the installed distribution whose version the inventory records
    :param pages: ``{dotted name: page under url}``; the anchor is the name itself
        unless the page gives one (``page#anchor``)
    """

    url: str
    distribution: str
    pages: dict[str, str]


PROJECTS: dict[str, Project] = {
    "numpy": Project(
        "https://numpy.org/doc/stable/",
        "numpy",
        {
            "numpy.ndarray": "reference/generated/numpy.ndarray.html",
            "numpy.dtype": "reference/generated/numpy.dtype.html",
        },
    ),
    "torch": Project(
        "https://docs.pytorch.org/docs/stable/",
        "torch",
        {
            "torch.Tensor": "tensors.html",
            "torch.dtype": "tensor_attributes.html",
            "torch.device": "tensor_attributes.html",
            "torch.Generator": "generated/torch.Generator.html",
            "torch.no_grad": "generated/torch.no_grad.html",
            "torch.nn.Module": "generated/torch.nn.Module.html",
            "torch.export.export": "export/api_reference.html",
            "torch.export.ExportedProgram": "export/api_reference.html",
            "torch.export.Dim": "export/api_reference.html#torch.export.dynamic_shapes.Dim",
            "torch.onnx.export": "onnx_export.html",
            "torch.nn.functional.scaled_dot_product_attention": (
                "generated/torch.nn.functional.scaled_dot_product_attention.html"
            ),
        },
    ),
    "transformers": Project(
        "https://huggingface.co/docs/transformers/main/en/",
        "transformers",
        {
            "transformers.PreTrainedModel": "main_classes/model",
            "transformers.GenerationConfig": "main_classes/text_generation",
            "transformers.PreTrainedConfig": "main_classes/configuration",
            "transformers.PreTrainedTokenizerBase": "internal/tokenization_utils",
            "transformers.TextStreamer": "internal/generation_utils",
            "transformers.DynamicCache": "internal/generation_utils",
            "transformers.StaticCache": "internal/generation_utils",
            "transformers.EncoderDecoderCache": "internal/generation_utils",
            "transformers.DynamicLayer": "internal/generation_utils",
            # not exported at the top level; its documentation anchors it there all the same
            "transformers.cache_utils.DynamicSlidingWindowLayer": (
                "internal/generation_utils#transformers.DynamicSlidingWindowLayer"
            ),
        },
    ),
    "onnx": Project(
        "https://onnx.ai/onnx/",
        "onnx",
        {
            "onnx.ModelProto": "api/classes.html",
            "onnx.GraphProto": "api/classes.html",
            "onnx.NodeProto": "api/classes.html",
            "onnx.TensorProto": "api/classes.html",
            "onnx.load": "api/serialization.html",
        },
    ),
    "onnx_ir": Project(
        "https://onnx.ai/ir-py/",
        "onnx-ir",
        {
            "onnx_ir.Model": "api/generated/onnx_ir.Model.html",
            "onnx_ir.Value": "api/generated/onnx_ir.Value.html",
        },
    ),
    "onnxruntime": Project(
        "https://onnxruntime.ai/docs/api/python/",
        "onnxruntime",
        {
            "onnxruntime.InferenceSession": "api_summary.html",
            "onnxruntime.SessionOptions": "api_summary.html",
            "onnxruntime.OrtValue": "api_summary.html",
            "onnxruntime.IOBinding": "api_summary.html",
        },
    ),
    "pandas": Project(
        "https://pandas.pydata.org/docs/",
        "pandas",
        {"pandas.DataFrame": "reference/api/pandas.DataFrame.html"},
    ),
}


def intersphinx_mapping() -> dict[str, tuple[str, str]]:
    """``conf.py``'s ``intersphinx_mapping``: each project's documentation root and its
    inventory file in :data:`INVENTORIES` (never the network).

    >>> intersphinx_mapping()["torch"][0]
    'https://docs.pytorch.org/docs/stable/'
    """
    roots = {"python": PYTHON_DOCS} | {name: p.url for name, p in PROJECTS.items()}
    return {name: (url, os.path.join(INVENTORIES, f"{name}.inv")) for name, url in roots.items()}


def _import(name: str) -> Any:
    """The object a dotted name refers to, importing the longest module prefix."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                raise LookupError(
                    f"{name!r} is not in the installed {parts[0]}; remove it from "
                    f"PROJECTS in {os.path.basename(__file__)} or fix its path."
                )
        return obj
    raise LookupError(f"cannot import {parts[0]!r} to write its inventory; install it first.")


def _role(obj: Any) -> str:
    """The python-domain role intersphinx resolves a reference to ``obj`` with."""
    if inspect.ismodule(obj):
        return "py:module"
    if inspect.isclass(obj):
        return "py:exception" if issubclass(obj, BaseException) else "py:class"
    if callable(obj):
        return "py:function"
    return "py:data"


def _defined_as(obj: Any) -> str | None:
    """The dotted path ``obj`` is defined under (what autodoc writes for a type hint)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return f"{module}.{qualname}"


def inventory_lines(project: str, pages: dict[str, str]) -> list[str]:
    """The entries of one project's inventory (``name role priority uri display``),
    the path an object is defined under added when it differs from its public name.
    """
    lines = []
    for name, page in pages.items():
        obj = _import(name)
        role = _role(obj)
        uri = page if "#" in page else f"{page}#$"
        lines.append(f"{name} {role} 1 {uri} -")
        alias = _defined_as(obj)
        if alias and alias != name and "<" not in alias:
            # same page and anchor as the public name, shown under the public name
            uri = page if "#" in page else f"{page}#{name}"
            lines.append(f"{alias} {role} 1 {uri} {name}")
    return lines


def write_inventory(path: str, project: str, version: str, lines: list[str]) -> str:
    """Writes a version-2 Sphinx inventory (a text header, then the zlib-compressed
    entries) atomically; returns the path."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = zlib.compress(("\n".join(sorted(lines)) + "\n").encode(), 9)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(header + body)

    return write_atomically(path, write)


def extract_python_inventory(deb: str) -> str:
    """Copies ``objects.inv`` out of Debian's ``python3.X-doc`` package into
    ``inventories/python.inv``; returns the path."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
        found = [
            os.path.join(root, "objects.inv")
            for root, _, files in os.walk(tmp)
            if "objects.inv" in files and root.endswith("html")
        ]
        if len(found) != 1:
            raise FileNotFoundError(f"{deb} holds no html/objects.inv; give python3.X-doc's .deb.")
        with open(found[0], "rb") as f:
            data = f.read()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write_atomically(os.path.join(INVENTORIES, "python.inv"), write)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-doc", help="Debian's python3.X-doc .deb to take python.inv from")
    args = parser.parse_args(argv)
    if args.python_doc:
        print(extract_python_inventory(args.python_doc))
    for project, spec in PROJECTS.items():
        version = importlib.metadata.version(spec.distribution)
        path = os.path.join(INVENTORIES, f"{project}.inv")
        print(write_inventory(path, project, version, inventory_lines(project, spec.pages)))


if __name__ == "__main__":
    main()
