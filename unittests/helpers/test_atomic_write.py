"""diag.helpers.atomic_write: the old file survives a failed write, the new one gets
the usual permissions."""

from __future__ import annotations

import json
import os

import pytest

from diag.export.record.export_cache import read_sidecar, write_sidecar
from diag.helpers.atomic_write import (
    check_file_destination,
    write_atomically,
    write_text_atomically,
)


def test_write_atomically_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "a.csv"
    write_atomically(str(path), lambda tmp: open(tmp, "w").write("old"))
    assert path.read_text() == "old"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(path), broken)
    assert path.read_text() == "old"
    assert os.listdir(path.parent) == ["a.csv"]


def test_write_text_atomically_and_the_sidecar_use_it(tmp_path):
    path = write_text_atomically(tmp_path / "deep" / "note.txt", "héllo\n")
    assert open(path, encoding="utf-8").read() == "héllo\n"
    umask = os.umask(0)
    os.umask(umask)
    sidecar = write_sidecar(tmp_path / "model.onnx", {"key": "abc", "n": 3})
    assert json.loads(open(sidecar).read()) == {"key": "abc", "n": 3}
    assert read_sidecar(tmp_path / "model.onnx") == {"key": "abc", "n": 3}
    assert os.stat(sidecar).st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["deep", "model.onnx.json"]


def test_a_folder_as_destination_names_a_file_to_give(tmp_path):
    (tmp_path / "out").mkdir()
    expected = str(tmp_path / "out" / "model.onnx")
    with pytest.raises(IsADirectoryError, match=f"is a folder; .*\\({expected}\\)"):
        write_text_atomically(tmp_path / "out", "x")
    assert os.listdir(tmp_path / "out") == []
    assert check_file_destination(tmp_path / "out" / "a.txt") == str(tmp_path / "out" / "a.txt")
