"""A damaged adapter is refused by its files, naming the file and the cause, before anything loads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lift_core.critic.adapter_files import CorruptAdapter, check_adapter

WEIGHTS = "adapter_model.safetensors"


def make_adapter(folder: Path, with_bin: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"a.lora_A.weight": torch.ones(2, 4), "a.lora_B.weight": torch.zeros(4, 2, dtype=torch.bfloat16)},
              str(folder / WEIGHTS))
    if with_bin:
        torch.save({"mm_projector.weight": torch.ones(3, 3)}, folder / "non_lora_trainables.bin")
    return folder


def header_of(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n])


def with_header(path: Path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_a_sound_adapter_passes_and_lists_its_weights(tmp_path):
    folder = make_adapter(tmp_path / "a", with_bin=True)
    assert check_adapter(str(folder)) == ["adapter_model.safetensors", "non_lora_trainables.bin"]


def _truncate(folder: Path) -> None:
    raw = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(raw[:-5])


def _cut_in_header(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:20])


def _too_short(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"\x01\x02")


def _not_safetensors(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"<html>403 Forbidden</html>" * 4)


def _garbled_header(folder: Path) -> None:
    raw = bytearray((folder / WEIGHTS).read_bytes())
    raw[9] = 0xFF
    (folder / WEIGHTS).write_bytes(bytes(raw))


def _appended(folder: Path) -> None:
    with open(folder / WEIGHTS, "ab") as f:
        f.write(b"\x00" * 16)


def _wrong_shape(folder: Path) -> None:
    n, header = header_of(folder / WEIGHTS)
    data = (folder / WEIGHTS).read_bytes()[8 + n:]
    header["a.lora_A.weight"]["shape"] = [4, 4]
    with_header(folder / WEIGHTS, header, data)


def _overlapping(folder: Path) -> None:
    n, header = header_of(folder / WEIGHTS)
    data = (folder / WEIGHTS).read_bytes()[8 + n:]
    for t in header.values():
        if isinstance(t, dict) and "data_offsets" in t:
            t["data_offsets"] = [0, t["data_offsets"][1] - t["data_offsets"][0]]
    with_header(folder / WEIGHTS, header, data)


def _config_not_json(folder: Path) -> None:
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", ')


def _config_a_list(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("[]")


@pytest.mark.parametrize("damage, file, cause", [
    (_truncate, WEIGHTS, "truncated"),
    (_cut_in_header, WEIGHTS, "truncated"),
    (_too_short, WEIGHTS, "truncated"),
    (_not_safetensors, WEIGHTS, "not a safetensors file"),
    (_garbled_header, WEIGHTS, "not valid JSON"),
    (_appended, WEIGHTS, "after the last tensor"),
    (_wrong_shape, WEIGHTS, "which needs"),
    (_overlapping, WEIGHTS, "overlap"),
    (_config_not_json, "adapter_config.json", "not valid JSON"),
    (_config_a_list, "adapter_config.json", "JSON object"),
])
def test_a_damaged_adapter_is_refused_naming_the_file_and_the_cause(tmp_path, damage, file, cause):
    folder = make_adapter(tmp_path / "a")
    damage(folder)
    with pytest.raises(CorruptAdapter) as info:
        check_adapter(str(folder))
    assert str(folder / file) in str(info.value) and cause in str(info.value)


@pytest.mark.parametrize("damage, cause", [("truncate", "truncated"), ("flip", "CRC")])
def test_a_damaged_torch_pickle_is_refused(tmp_path, damage, cause):
    folder = make_adapter(tmp_path / "a", with_bin=True)
    path = folder / "non_lora_trainables.bin"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        # A byte of the stored tensor data, which only the member's CRC covers.
        raw[raw.index(struct.pack("<f", 1.0))] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptAdapter, match=cause) as info:
        check_adapter(str(folder))
    assert str(path) in str(info.value)


def test_a_folder_that_is_no_adapter_is_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        check_adapter(str(tmp_path / "empty"))
    (tmp_path / "empty" / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        check_adapter(str(tmp_path / "empty"))


def test_critic_id_and_load_critic_refuse_it_before_loading_anything(tmp_path, monkeypatch):
    from lift_core.critic import backbone

    folder = make_adapter(tmp_path / "a")
    _truncate(folder)
    with pytest.raises(CorruptAdapter, match="truncated"):
        backbone.critic_id("Qwen/Qwen2-VL-2B-Instruct", str(folder))
    monkeypatch.setattr(backbone, "get_backbone", lambda name: pytest.fail("the base was loaded first"))
    with pytest.raises(CorruptAdapter, match="truncated"):
        backbone.load_critic("Qwen/Qwen2-VL-2B-Instruct", str(folder), device="cpu")
