"""``_doc/make_inventories.py`` (the offline intersphinx inventories the docs build
reads) and ``_doc/reference_paths.py`` (a reference to a diag object under any path it
imports from links to its documented entry), without a Sphinx build."""

from __future__ import annotations

import doctest
import importlib.util
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

# the release phases of CI install the dev extra without the docs tools; these tests
# are pinned (below) and run in the phase of the tested set, which has Sphinx
InventoryFile = pytest.importorskip("sphinx.util.inventory").InventoryFile

# the inventories are written from the tested set's packages (transformers' module
# paths differ on other releases); the hook's rule is Sphinx's and diag's alone
pytestmark = pytest.mark.pinned

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "_doc"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, DOC / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up while defined
    spec.loader.exec_module(module)
    return module


make_inventories = _load("make_inventories")
reference_paths = _load("reference_paths")


def _entries(path: Path) -> list[str]:
    """The decompressed lines of an inventory, its header left out."""
    data = path.read_bytes()
    for _ in range(4):
        data = data[data.index(b"\n") + 1 :]
    return zlib.decompress(data).decode().splitlines()


@pytest.mark.parametrize("module", [make_inventories, reference_paths], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0, result


def test_an_alias_points_at_the_public_name():
    lines = make_inventories.inventory_lines(
        "torch", {"torch.nn.Module": "generated/torch.nn.Module.html"}
    )
    assert lines == [
        "torch.nn.Module py:class 1 generated/torch.nn.Module.html#$ -",
        "torch.nn.modules.module.Module py:class 1 "
        "generated/torch.nn.Module.html#torch.nn.Module torch.nn.Module",
    ]


def test_a_page_may_give_its_anchor():
    lines = make_inventories.inventory_lines("torch", {"torch.no_grad": "autograd.html#locally"})
    assert lines[0] == "torch.no_grad py:class 1 autograd.html#locally -"


def test_a_name_the_package_lacks_is_refused():
    with pytest.raises(LookupError, match="not in the installed torch; remove it from PROJECTS"):
        make_inventories.inventory_lines("torch", {"torch.NoSuchThing": "x.html"})


def test_sphinx_reads_what_is_written(tmp_path):
    path = make_inventories.write_inventory(
        str(tmp_path / "numpy.inv"),
        "numpy",
        "2.0",
        make_inventories.inventory_lines("numpy", {"numpy.dtype": "reference/dtype.html"}),
    )
    with open(path, "rb") as f:
        inventory = InventoryFile.load(f, "https://numpy.org/doc/stable/", "/".join)
    entry = inventory["py:class"]["numpy.dtype"]
    assert entry[2] == "https://numpy.org/doc/stable/reference/dtype.html#numpy.dtype"


def test_every_inventory_is_a_file_of_the_repository():
    mapping = make_inventories.intersphinx_mapping()
    assert set(mapping) == {"python"} | set(make_inventories.PROJECTS)
    for url, path in mapping.values():
        assert url.startswith("https://") and Path(path).parent == DOC / "inventories"
        assert Path(path).is_file(), f"{path} is missing: run python _doc/make_inventories.py"


@pytest.mark.parametrize("project", sorted(make_inventories.PROJECTS))
def test_the_kept_inventories_are_up_to_date(project):
    spec = make_inventories.PROJECTS[project]
    expected = sorted(make_inventories.inventory_lines(project, spec.pages))
    assert _entries(DOC / "inventories" / f"{project}.inv") == expected, (
        f"_doc/inventories/{project}.inv differs from PROJECTS: run python _doc/make_inventories.py"
    )


def _env(*documented: str) -> SimpleNamespace:
    domain = SimpleNamespace(objects=dict.fromkeys(documented))
    return SimpleNamespace(get_domain=lambda name: domain)


@pytest.mark.parametrize(
    ("path", "module"),
    [
        ("diag.testing.assert_same_tokens", None),  # the subpackage's re-export
        ("diag.testing.tokens.assert_same_tokens", None),  # the defining module
        ("assert_same_tokens", "diag.testing"),  # a bare name inside the subpackage
    ],
)
def test_a_path_links_to_the_documented_entry(path, module):
    env = _env("diag.assert_same_tokens", "diag.assert_logits_close")
    modules = [module] if module else []
    assert reference_paths.documented_name(env, path, modules) == "diag.assert_same_tokens"


def test_a_constant_links_by_its_name_and_value():
    env = _env("diag.contract.names.DIM_BATCH", "diag.contract.names.DIM_SEQ")
    assert (
        reference_paths.documented_name(env, "diag.contract.DIM_BATCH", [])
        == "diag.contract.names.DIM_BATCH"
    )


def test_a_bare_name_is_read_in_the_module_of_its_docstring():
    node = reference_paths.nodes.Element(
        source="export_plan.py:docstring of diag.export.plan.export_plan.plan_export"
    )
    modules = reference_paths.context_modules(node)
    env = _env("diag.export.ExportResult")
    assert (
        reference_paths.documented_name(env, "ExportResult", modules) == "diag.export.ExportResult"
    )


def test_a_name_documented_in_the_docstring_s_own_module():
    # Sphinx looks a bare name up in the module of the page's directive (diag), the
    # hook in the module that defines the docstring
    node = reference_paths.nodes.Element(
        source="export_plan.py:docstring of diag.export.plan.export_plan.plan_export"
    )
    node["py:module"] = "diag"
    env = _env("diag.export.plan.export_plan.DEFAULT_OPSET")
    name = reference_paths.documented_name(
        env, "DEFAULT_OPSET", reference_paths.context_modules(node)
    )
    assert name == "diag.export.plan.export_plan.DEFAULT_OPSET"


def test_a_type_hint_of_a_signature_is_read_in_the_class_s_module():
    node = reference_paths.nodes.Element()
    node["py:module"], node["py:class"] = "diag.ort", "OrtBackend"
    assert reference_paths.context_modules(node)[:2] == ["diag.ort", "diag.ort.backend"]


def test_a_dataclass_field_without_default_links_to_its_entry():
    # ContractInfo.past_names is no class attribute: the class declares it
    env = _env("diag.contract.read.ContractInfo.past_names")
    name = reference_paths.documented_name(env, "diag.contract.ContractInfo.past_names", [])
    assert name == "diag.contract.read.ContractInfo.past_names"


def test_a_name_read_through_an_import_alias_is_the_other_project_s():
    # diag.ort.backend imports onnxruntime as ort
    name = reference_paths.external_name("ort.InferenceSession", ["diag.ort.backend"])
    assert name == "onnxruntime.capi.onnxruntime_inference_collection.InferenceSession"


@pytest.mark.parametrize(
    ("path", "documented"),
    [
        # documented nowhere under its name
        ("diag.testing.assert_same_tokens", "diag.assert_logits_close"),
        # imports nothing
        ("diag.testing.no_such_function", "diag.no_such_function"),
        # outside diag
        ("torch.nn.Module", "diag.Module"),
    ],
)
def test_no_link_without_the_same_documented_object(path, documented):
    assert reference_paths.documented_name(_env(documented), path, []) is None


def _env_of_modules(*modules: str) -> SimpleNamespace:
    domain = SimpleNamespace(objects={}, modules=dict.fromkeys(modules))
    return SimpleNamespace(get_domain=lambda name: domain)


@pytest.mark.parametrize(
    ("path", "context", "expected"),
    [
        # a helper with no entry of its own links to the module that defines it
        ("diag.generation.decoding._start", [], "diag.generation.decoding"),
        # a bare name, read in the module of its docstring
        ("WIDTH", ["diag.helpers.wrap"], "diag.helpers.wrap"),
        # a module links to itself, or to its nearest documented package
        ("diag.export.make.quantize", [], "diag.export"),
        # nothing imports: no link (-n reports it)
        ("diag.generation.no_such_function", [], None),
        ("no_such_name", ["diag.helpers.wrap"], None),
    ],
)
def test_a_helper_without_entry_links_to_its_module(path, context, expected):
    env = _env_of_modules("diag.generation.decoding", "diag.helpers.wrap", "diag.export")
    assert reference_paths.module_entry(env, path, context) == expected
