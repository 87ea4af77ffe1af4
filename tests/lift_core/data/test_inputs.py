"""Issue 27, class 4 at its root: what any command reads is a regular file, bounded in bytes and time,
and one entry of a JSON list never takes the file down (``lift_core.data.inputs``, ``storage.input_blocks``).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from lift_core import storage
from lift_core.data.inputs import BadEntry, InputLimits, deciding_entry, load_json_list, load_json_value, parse_json_list
from lift_core.data.sources import SourceError

DEEP = "[" * 50_000 + "]" * 50_000  # past any recursion limit
HUGE_INT = "9" * 5000  # past Python's int-from-text limit (a ValueError that is not a JSONDecodeError)


@pytest.mark.parametrize("bad, reason", [
    (DEEP, "nested too deeply to read"),
    ('{"video": "a.mp4", "caption": ' + DEEP + "}", "nested too deeply to read"),
    ('{"video": "a.mp4", "caption": "x", "extra": {"k": ' + DEEP + "}}", "nested too deeply to read"),
    (HUGE_INT, "cannot be decoded: Exceeds the limit"),
    ('{"score": ' + HUGE_INT + "}", "cannot be decoded: Exceeds the limit"),
])
def test_an_entry_that_cannot_be_decoded_rejects_only_itself(bad, reason):
    text = f'[{{"a": 1}}, {bad}, "b", {{"c": "]}}[{{ \\" tricky"}}]'
    entries = parse_json_list("f.json", text)
    assert entries[0] == {"a": 1} and entries[2] == "b" and entries[3] == {"c": ']}[{ " tricky'}
    assert isinstance(entries[1], BadEntry) and entries[1].reason.startswith(reason)
    assert len(entries) == 4


def test_text_faults_stay_in_their_entry(tmp_path):
    src = tmp_path / "x.json"
    src.write_bytes(b'\xef\xbb\xbf[{"caption": "a \xff b"}, {"caption": "ok"}]')  # a BOM, an invalid byte
    entries = load_json_list(str(src))
    assert entries[1] == {"caption": "ok"} and entries[0]["caption"] == "a \udcff b"  # rejected later, per entry


@pytest.mark.parametrize("text, why", [
    ("", "not valid JSON: Expecting value"),
    ("[1,]", "not valid JSON: Expecting value"),
    ("[1 2]", "not valid JSON: Expecting ',' delimiter"),
    ("[1] [2]", "not valid JSON: Extra data"),
    ('{"a": 1}', "expected a JSON list at the top level, got dict"),
    ("[" + "[" * 50_000, "not valid JSON"),  # where the deep entry ends is unknown
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply to read"),
])
def test_what_is_not_a_json_list_is_the_whole_files_error_naming_it(text, why):
    with pytest.raises(SourceError, match="^f.json") as err:
        parse_json_list("f.json", text)
    assert why in str(err.value)


def test_one_value_files_name_the_file(tmp_path):
    (tmp_path / "s.json").write_text('{"caption": ' + DEEP + "}")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/s.json: nested too deeply"):
        load_json_value(str(tmp_path / "s.json"))
    (tmp_path / "t.json").write_text("{")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/t.json is not valid JSON"):
        load_json_value(str(tmp_path / "t.json"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dir"])
def test_only_regular_files_are_read_and_nothing_blocks(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.json"
        os.mkfifo(path)  # no writer: opening it for reading would block forever
        why = r"not a regular file \(a FIFO\)"
    elif kind == "dev-zero":
        path, why = "/dev/zero", r"not a regular file \(a character device\)"  # never ends
    else:
        path, why = tmp_path, r"\[Errno 21\] is a directory"
    for read in (lambda u: storage.read_input_bytes(u, 1 << 20), lambda u: storage.input_content_id(u, 1 << 20)):
        with pytest.raises(OSError, match="regular file|directory"):
            read(str(path))
    with pytest.raises(SourceError, match=f"^cannot read {path}: {why}"):
        load_json_list(str(path))
    with pytest.raises(ValueError, match=f"cannot read {path}"):
        load_json_value(str(path))


def test_reads_are_bounded_in_bytes_and_time(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_text(json.dumps(["x" * 1000] * 10))
    with pytest.raises(SourceError, match=rf"{big}: \d+ bytes, over the limit of 100 \(data.max_json_bytes\)"):
        load_json_list(str(big), InputLimits(max_json_bytes=100))
    assert len(load_json_list(str(big), InputLimits(max_json_bytes=1 << 20))) == 10
    with pytest.raises(storage.InputRefusedError, match=r"over the limit of 100 \(data.max_video_bytes\)"):
        InputLimits(max_video_bytes=100).video_content_id(str(big))
    # A file that grows while it is read is cut at the limit too, not read to its end.
    blocks = storage.input_blocks(str(big), 20_000, chunk=4096)
    next(blocks)
    with open(big, "a") as f:
        f.write(" " * 20_000)
    with pytest.raises(storage.InputRefusedError, match="more than 20000 bytes"):
        list(blocks)
    # The deadline is checked between blocks: a read that trickles past it stops.
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(storage.time, "monotonic", lambda: next(clock))
    with pytest.raises(storage.InputTimeoutError, match=rf"{big}: not read within 12 s"):
        list(storage.input_blocks(str(big), 1 << 20, 12, chunk=1000))
    # A NUL byte in a path is a refusal (an OSError, quarantined as one input), not a ValueError.
    with pytest.raises(storage.InputRefusedError, match="NUL byte"):
        storage.read_input_bytes("/tmp/a\x00b.mp4", 100)


def test_format_detection_looks_past_entries_that_decide_nothing():
    rules = [("lift-hra", lambda e: "conversations" in e), ("lift-inference", lambda e: "video" in e)]
    assert deciding_entry([None, BadEntry("x"), {"other": 1}, {"conversations": []}, {"video": "a"}], rules) == \
        ("lift-hra", 3)
    assert deciding_entry([None, "x", {"video": "a"}], rules) == ("lift-inference", 2)
    assert deciding_entry([None, 3], rules) is None


def test_the_recursion_limit_is_left_as_it_was():
    limit = sys.getrecursionlimit()
    parse_json_list("f", f"[{DEEP}]")
    assert sys.getrecursionlimit() == limit
