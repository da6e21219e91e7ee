"""diag.helpers.wrap: long lines of a report wrapped at their spaces, short ones kept."""

from __future__ import annotations

from diag.helpers.wrap import WIDTH, wrap_report


def test_long_lines_wrap_with_a_deeper_indent_short_ones_stay():
    text = "head line\n  verdict: " + " ".join(f"w{i}" for i in range(60)) + "\n  short"
    out = wrap_report(text)
    lines = out.splitlines()
    assert lines[0] == "head line" and lines[-1] == "  short"
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[1].startswith("  verdict: w0 w1") and lines[2].startswith("      w")
    # nothing lost, nothing added but the line breaks and the indents
    assert " ".join(out.split()) == " ".join(text.split())


def test_a_word_longer_than_the_width_is_not_cut():
    path = "/tmp/" + "x" * 100 + "/model.onnx"
    out = wrap_report(f"no longer matches the record {path}:", width=40)
    assert path + ":" in out.split()
