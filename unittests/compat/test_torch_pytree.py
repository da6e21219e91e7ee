"""diag.compat.torch_pytree: a pytree node removed from every registry torch keeps, the
Python one always, optree's (torch's C++ pytree) whenever optree is installed, both
before and after ``torch.utils._cxx_pytree`` is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.utils._pytree as pytree

from diag.compat import torch_pytree
from diag.compat.versions import pinned_releases

needs_optree = pytest.mark.skipif(
    not torch_pytree.cxx_pytree_exists(),
    reason="optree is not installed (pip install optree, in diag's dev extra): "
    "torch's C++ pytree is off",
)


class Pair:
    def __init__(self, a: object, b: object) -> None:
        self.a, self.b = a, b


def _register(cls: type) -> None:
    pytree.register_pytree_node(
        cls,
        lambda p: ([p.a, p.b], None),
        lambda values, _: cls(*values),
        serialized_type_name=f"{__name__}.{cls.__qualname__}",
    )


# torch's registries only, no transformers class: the same on every transformers release
@pytest.mark.pinned
def test_removed_from_every_registry_and_registered_again():
    class Local(Pair):
        pass

    for _ in range(2):  # the second registration is the one optree refused
        _register(Local)
        assert torch_pytree.registries_holding(Local) == torch_pytree.registries()
        leaves, spec = pytree.tree_flatten(Local(torch.zeros(1), 2))
        assert leaves[1] == 2 and type(pytree.tree_unflatten(leaves, spec)) is Local
        torch_pytree.deregister_pytree_node(Local)
        assert torch_pytree.registries_holding(Local) == []
        assert Local not in pytree.SUPPORTED_NODES


# torch's registries only, no transformers class: the same on every transformers release
@pytest.mark.pinned
@needs_optree
def test_removed_from_optree_once_the_cxx_pytree_is_imported():
    import optree
    import torch.utils._cxx_pytree as cxx_pytree

    class Local(Pair):
        pass

    for _ in range(2):
        _register(Local)
        assert torch_pytree.registries_holding(Local) == ["python", "cxx"]
        leaves, spec = cxx_pytree.tree_flatten(Local(1, 2))
        assert leaves == [1, 2] and type(cxx_pytree.tree_unflatten(leaves, spec)) is Local
        torch_pytree.deregister_pytree_node(Local)
        assert optree.register_pytree_node.get(Local, namespace="torch") is None
        assert torch_pytree.registries_holding(Local) == []


# torch's registries only, no transformers class: the same on every transformers release
@pytest.mark.pinned
@needs_optree
def test_removed_while_pending_the_cxx_pytree_import():
    # a fresh process: this one may have imported torch.utils._cxx_pytree already
    script = textwrap.dedent(
        """
        import sys
        import optree
        import torch.utils._pytree as pytree
        from diag.compat import torch_pytree

        class Pair:
            def __init__(self, a, b):
                self.a, self.b = a, b

        assert "torch.utils._cxx_pytree" not in sys.modules
        pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda v, _: Pair(*v))
        assert torch_pytree.registries_holding(Pair) == ["python", "cxx"]
        torch_pytree.deregister_pytree_node(Pair)
        assert torch_pytree.registries_holding(Pair) == []
        import torch.utils._cxx_pytree  # registers what is pending: Pair must not be
        assert optree.register_pytree_node.get(Pair, namespace="torch") is None
        pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda v, _: Pair(*v))
        print(torch_pytree.registries_holding(Pair))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['python', 'cxx']"


# torch's registries only, no transformers class: the same on every transformers release
@pytest.mark.pinned
def test_removing_what_is_not_registered_says_so():
    with pytest.raises(ValueError, match="Pair is not a pytree node in any of torch's registries"):
        torch_pytree.deregister_pytree_node(Pair)


# torch's registries only, no transformers class: the same on every transformers release
@pytest.mark.pinned
def test_a_moved_private_name_names_both_torch_releases(monkeypatch):
    monkeypatch.delattr(pytree, "_cxx_pytree_exists")
    with pytest.raises(torch_pytree.TorchPytreeApiError) as info:
        torch_pytree.registries()
    message = str(info.value)
    assert "torch.utils._pytree._cxx_pytree_exists is missing" in message
    assert f"installed torch {torch.__version__}" in message
    assert f"tested with torch {pinned_releases()['torch']}" in message
    assert "diag/compat/torch_pytree.py" in message
