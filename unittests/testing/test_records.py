"""Golden records: written once, matched on the next run, and failing with the step that
changed."""

from __future__ import annotations

import json

import pytest

import diag
from diag.testing import RecordError, assert_matches_record, load_record, record
from diag.testing.records import FORMAT, FORMAT_VERSION

PROMPTS = [[5, 17, 256, 1024, 77], [9, 8, 300]]


@pytest.fixture(scope="module")
def recorded(zoo, tmp_path_factory):
    """A record of the tiny llama export (6 new tokens, 2 prompts)."""
    _, path = zoo("llama")
    out = tmp_path_factory.mktemp("records") / "llama.json"
    return record(path, PROMPTS, out, max_new_tokens=6)


def test_record_content(recorded, zoo):
    content = json.loads(open(recorded).read())
    assert content["format"] == FORMAT and content["format_version"] == FORMAT_VERSION
    assert content["prompts"] == PROMPTS
    assert set(content["versions"]) == {"torch", "transformers", "onnx", "onnxruntime", "diag"}
    assert content["versions"]["diag"] == diag.__version__
    assert content["model"]["kind"] == "onnx" and len(content["model"]["weights_sha256"]) == 64
    assert content["decoding"]["max_new_tokens"] == 6 and content["decoding"]["do_sample"] is False
    for row in content["rows"]:
        assert len(row["tokens"]) == len(row["top"]) == 6
        # the chosen token is the best candidate of its step (greedy), 6 significant digits
        assert [step[0][0] for step in row["top"]] == row["tokens"]
        assert all(len(f"{abs(v):.10g}".replace(".", "").lstrip("0")) <= 6
                   for step in row["top"] for _, v in step)  # fmt: skip


def test_a_record_matches_the_next_run(recorded, zoo):
    model, path = zoo("llama")
    assert_matches_record(path, recorded)
    # the torch model generates what its export recorded, within the record's tolerance
    assert_matches_record(model, recorded)
    # the fixture's way: the test's own inputs are checked to be the record's
    assert_matches_record(path, recorded, prompts=PROMPTS, max_new_tokens=6)
    with pytest.raises(AssertionError, match="max_new_tokens"):
        assert_matches_record(path, recorded, prompts=PROMPTS, max_new_tokens=5)
    with pytest.raises(AssertionError, match="the prompts"):
        assert_matches_record(path, recorded, prompts=PROMPTS[:1], max_new_tokens=6)


def test_hand_edited_tokens_fail_with_the_edited_step(recorded, zoo, tmp_path):
    _, path = zoo("llama")
    content = json.loads(open(recorded).read())
    content["rows"][1]["tokens"][3] += 1
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(content))
    with pytest.raises(AssertionError) as info:
        assert_matches_record(path, edited)
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    assert "prompt 1 [9, 8, 300] (3 tokens), row 1: the tokens changed at step 3 " in message
    assert f"the record has {content['rows'][1]['tokens'][3]}, now" in message
    assert "row 0" not in message
    assert "is not its own best candidate" in message
    assert "the library versions and the weights are those of the record" in message


def test_edited_logits_and_versions(recorded, zoo, tmp_path):
    _, path = zoo("llama")
    content = json.loads(open(recorded).read())
    content["rows"][0]["top"][2][1][1] += 0.5
    content["versions"]["onnxruntime"] = "0.0.1"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(content))
    with pytest.raises(AssertionError) as info:
        assert_matches_record(path, edited)
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    token = content["rows"][0]["top"][2][1][0]
    assert f"moved beyond the record's tolerance at step 2, token {token}" in message
    assert "onnxruntime 0.0.1 -> " in message


def test_broken_export_against_the_record(recorded, broken_llama):
    with pytest.raises(AssertionError) as info:
        assert_matches_record(broken_llama, recorded)
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    assert "the tokens changed at step 0" in message
    assert "the weights changed (sha256" in message


@pytest.mark.parametrize(
    "text, what",
    [
        ("{not json", "it is not JSON"),
        ('{"a": 1}', "its 'format' is None"),
        ("[1, 2]", "its 'format' is 'list'"),
        (json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION + 1}), "format_version 2"),
        (
            json.dumps({"format": FORMAT, "format_version": 1, "prompts": [[1]]}),
            "missing or malformed",
        ),
    ],
)
def test_corrupt_or_foreign_files(tmp_path, text, what):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(RecordError, match="is not a usable diag record") as info:
        load_record(bad)
    assert what in str(info.value)


def test_missing_record(tmp_path, zoo):
    _, path = zoo("llama")
    with pytest.raises(FileNotFoundError, match="no record at"):
        assert_matches_record(path, tmp_path / "none.json")


def test_a_beam_search_record(zoo, broken_llama, tmp_path):
    model, path = zoo("llama")
    out = record(path, PROMPTS, tmp_path / "beams.json", max_new_tokens=4, num_beams=3,
                 num_return_sequences=2, num_candidates=6)  # fmt: skip
    content = json.loads(open(out).read())
    assert content["decoding"]["num_beams"] == 3 and len(content["rows"]) == 4
    # a hypothesis's logits at a step are those of the row it continued then: its token
    # is among their 2 * num_beams best (a better sum would come from the same row)
    for row in content["rows"]:
        for token, step in zip(row["tokens"], row["top"], strict=True):
            assert token in [candidate[0] for candidate in step]
    assert_matches_record(model, out)
    with pytest.raises(AssertionError, match="the tokens changed at step 0"):
        assert_matches_record(broken_llama, out)
