"""Every real LiFT fixture through its reader, with exact counts."""

from __future__ import annotations

import json

import pytest

from lift_core.data.sources import SourceError, read_source
from lift_core.domain import QUESTIONS, dimension_of_question, parse_label_answer


def test_vidgen_annotations_group_by_video(fixtures_dir):
    res = read_source("lift-hra", str(fixtures_dir / "annotations/vidgen-data.json"))
    assert len(res.records) == 711
    assert res.rejects == [] and res.ratings == 1000
    labels = [r[f"label_{d}"] for r in res.records for d in ("semantic", "fidelity", "motion") if r[f"label_{d}"]]
    assert len(labels) == 1000
    assert set(labels) == {"Good"}
    per_dim = {d: sum(r[f"label_{d}"] is not None for r in res.records) for d in ("semantic", "fidelity", "motion")}
    assert per_dim == {"semantic": 352, "fidelity": 315, "motion": 333}
    first = res.records[0]
    assert first["caption"].startswith("The video features three women")
    assert first["caption"].endswith('displaying the logo "abc."')
    assert "Please identify" not in first["caption"] and "<video>" not in first["caption"]
    assert first["reason_fidelity"] == "There are no obvious problems."
    # Relative video paths resolve next to the JSON unless a videos root is given.
    assert first["uri"] == f"{fixtures_dir}/annotations/videos/AkQlXiOmKhM-Scene-0009.mp4"
    rooted = read_source("lift-hra", str(fixtures_dir / "annotations/vidgen-data.json"), "s3://bucket/hra")
    assert rooted.records[0]["uri"] == "s3://bucket/hra/videos/AkQlXiOmKhM-Scene-0009.mp4"


def test_questions_are_lifts_verbatim(fixtures_dir):
    data = json.loads((fixtures_dir / "annotations/vidgen-data.json").read_text())
    seen = {dimension_of_question(e["conversations"][0]["value"]) for e in data}
    assert seen == set(QUESTIONS)
    for entry in data:
        human = entry["conversations"][0]["value"]
        assert human.endswith(QUESTIONS[dimension_of_question(human)])


def test_critic_output_labels(fixtures_dir):
    res = read_source("critic-output", str(fixtures_dir / "lift-demo/critic_output_13b.json"))
    got = [(r["label_semantic"], r["label_fidelity"], r["label_motion"]) for r in res.records]
    assert got == [("Good", "Bad", "Good"), ("Bad", "Bad", "Normal")]
    assert res.records[0]["uri"].endswith("lift-demo/0.mp4")
    assert res.records[1]["reason_motion"].startswith("The panda's movements in the video are basically normal")
    assert res.ratings == 6 and res.rejects == []
    res40 = read_source("critic-output", str(fixtures_dir / "lift-demo/critic_output_40b.json"))
    got40 = [(r["label_semantic"], r["label_fidelity"], r["label_motion"]) for r in res40.records]
    assert got40 == [("Good", "Good", "Good"), ("Bad", "Bad", "Normal")] and res40.rejects == []


def test_inference_json_resolves_next_to_it(fixtures_dir):
    res = read_source("lift-inference", str(fixtures_dir / "lift-demo/test.json"))
    assert len(res.records) == 2 and res.rejects == []
    assert [r["uri"] for r in res.records] == [str(fixtures_dir / "lift-demo/0.mp4"), str(fixtures_dir / "lift-demo/1.mp4")]
    assert res.records[0]["caption"].startswith("A majestic crane") and res.records[1]["caption"].startswith("A fluffy panda")
    assert all(r["label_semantic"] is None for r in res.records)


def test_vbench_prompts(fixtures_dir):
    res = read_source("vbench-prompts", str(fixtures_dir / "prompts/vbench_full_info_opt.json"))
    assert len(res.records) == 946 and res.rejects == []
    assert len({r["caption"] for r in res.records}) == 944  # two prompts appear twice (ingest merges them)
    assert res.kind == "prompts"
    assert res.records[0]["caption"] == "In a still frame, a stop sign"
    assert len({d for r in res.records for d in r["dimensions"]}) == 16


def test_alignment_template_is_rejected_clearly(fixtures_dir, tmp_path):
    # LiFT's template has a trailing comma, so it is not JSON: the whole source is refused, naming
    # the file and the position (no lenient parsing that could hide other damage).
    template = fixtures_dir / "annotations/alignment-data-template.json"
    with pytest.raises(SourceError, match=r"alignment-data-template.json is not valid JSON: .*line 7"):
        read_source("alignment", str(template))
    # Without the comma, its one entry is still a placeholder: "reward_score" is not a number.
    fixed = tmp_path / "template.json"
    fixed.write_text(template.read_text().replace("},\n]", "}\n]"))
    res = read_source("alignment", str(fixed))
    assert res.records == [] and [(r.index, r.reason) for r in res.rejects] == [(0, "score 'reward_score' is not a number")]


def test_alignment_entries_validated(tmp_path):
    src = tmp_path / "align.json"
    src.write_text(json.dumps([
        {"video": "a.mp4", "caption": "a cat", "score": 0.7},
        {"video": "b.mp4", "caption": "a dog", "score": "reward_score"},
        {"video": "c.mp4", "caption": "", "score": 0.1},
        {"video": "d.mp4", "caption": "a cow", "score": 3},
    ]))
    res = read_source("alignment", str(src), str(tmp_path))
    assert [r["uri"] for r in res.records] == [f"{tmp_path}/a.mp4"]
    assert [r.index for r in res.rejects] == [1, 2, 3]
    assert all(str(src) in str(r) for r in res.rejects)


def test_malformed_hra_entries_are_counted_not_dropped(tmp_path):
    q = QUESTIONS["motion"]
    src = tmp_path / "hra.json"
    src.write_text(json.dumps([
        {"video": "v.mp4", "conversations": [{"from": "human", "value": f"<video>\n a cat {q}"},
                                             {"from": "gpt", "value": "Bad. It jumps."}]},
        {"video": "w.mp4", "conversations": [{"from": "human", "value": f"<video>\n a dog {q}"},
                                             {"from": "gpt", "value": "Excellent. Fine."}]},
        {"video": "x.mp4", "conversations": [{"from": "human", "value": "<video>\n what is this?"},
                                             {"from": "gpt", "value": "Good. ok"}]},
        {"video": "y.mp4"},
        "not an object",
    ]))
    res = read_source("lift-hra", str(src), str(tmp_path))
    assert len(res.records) == 1 and res.records[0]["label_motion"] == "Bad"
    reasons = {r.index: r.reason for r in res.rejects}
    assert set(reasons) == {1, 2, 3, 4}
    assert "unknown label 'Excellent.'" in reasons[1]
    assert "none of LiFT's three questions" in reasons[2]


def test_label_is_first_word_not_substring():
    # LiFT's parser would call this "Bad" because the word appears later; the label is the first word.
    assert parse_label_answer("Good. Nothing Bad or Normal here.") == ("Good", "Nothing Bad or Normal here.")
    with pytest.raises(ValueError):
        parse_label_answer("The motion is Bad.")


def test_video_dir_with_sidecars(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a.json").write_text(json.dumps({"caption": "a red circle"}))
    (tmp_path / "b.mp4").write_bytes(b"y")
    (tmp_path / "c.mp4").write_bytes(b"z")
    (tmp_path / "captions.json").write_text(json.dumps({"c.mp4": "three blue squares"}))
    res = read_source("video-dir", str(tmp_path))
    assert sorted(r["caption"] for r in res.records) == ["a red circle", "three blue squares"]
    assert len(res.rejects) == 1 and "b.mp4" in str(res.rejects[0]) and "no caption" in res.rejects[0].reason


def test_missing_and_malformed_sources(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        read_source("lift-hra", str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        read_source("lift-inference", str(bad))
    with pytest.raises(SourceError, match="unknown format"):
        read_source("mp3", str(bad))


def test_second_rating_or_other_caption_of_a_video_is_rejected(tmp_path):
    q = QUESTIONS
    entries = [
        ("v.mp4", f"<video>\n a cat {q['motion']}", "Bad. It jumps."),
        ("v.mp4", f"<video>\n a cat {q['semantic']}", "Good. Fine."),
        ("v.mp4", f"<video>\n a cat {q['motion']}", "Good. Smooth."),  # a second motion rating
        ("v.mp4", f"<video>\n a dog {q['fidelity']}", "Good. Fine."),  # another caption
        ("w.mp4", f"<video>\n a cow {q['fidelity']}", "Normal"),  # label without a reason is fine
    ]
    src = tmp_path / "hra.json"
    src.write_text(json.dumps([{"video": v, "conversations": [{"from": "human", "value": h}, {"from": "gpt", "value": a}]}
                               for v, h, a in entries]))
    res = read_source("lift-hra", str(src))
    assert res.ratings == 3 and len(res.records) == 2
    v = next(r for r in res.records if r["uri"].endswith("v.mp4"))
    assert (v["label_motion"], v["label_semantic"], v["label_fidelity"]) == ("Bad", "Good", None)
    assert [(r.index, r.reason.split(" of ")[0]) for r in res.rejects] == [
        (2, "second motion rating"), (3, "caption differs from an earlier entry")]
    w = next(r for r in res.records if r["uri"].endswith("w.mp4"))
    assert (w["label_fidelity"], w["reason_fidelity"]) == ("Normal", "")


def test_critic_output_entries_validated(tmp_path):
    good = {"video": "a.mp4", "caption": "a cat", "semantic consistency": "Good. ok", "fidelity issues": "Bad. x",
            "motion issues": "Normal. y"}
    src = tmp_path / "out.json"
    src.write_text(json.dumps([good, {**good, "motion issues": "Fine. z"}, {k: v for k, v in good.items() if k != "fidelity issues"}]))
    res = read_source("critic-output", str(src))
    assert len(res.records) == 1 and res.records[0]["label_fidelity"] == "Bad"
    assert [(r.index, r.reason) for r in res.rejects] == [
        (1, "unknown label 'Fine.' (expected one of Good, Normal, Bad)"), (2, "missing answer 'fidelity issues'")]


def test_text_of_every_field_is_checked_per_entry(tmp_path):
    # A BOM is not an error; a prompt_opt or a dimension that is not text rejects its entry only.
    src = tmp_path / "vbench.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps([
        {"prompt_en": "a red circle", "dimension": ["color"], "prompt_opt": "a bright red circle"},
        {"prompt_en": "a cat", "dimension": ["color"], "prompt_opt": 3},
        {"prompt_en": "a dog", "dimension": [["color"]]},
        {"prompt_en": "   "},
    ]).encode())
    res = read_source("vbench-prompts", str(src))
    assert [r["caption"] for r in res.records] == ["a red circle"]
    assert [(r.file, r.index, r.reason) for r in res.rejects] == [
        (str(src), 1, "prompt_opt has type int, not text"),
        (str(src), 2, "dimension has type list, not text"),
        (str(src), 3, "empty prompt_en"),
    ]


def test_the_limit_reaches_every_reader(tmp_path):
    src = tmp_path / "test.json"
    src.write_text(json.dumps([{"video": "a.mp4", "caption": "x" * 50}, {"video": "b.mp4", "caption": "y" * 51}]))
    res = read_source("lift-inference", str(src), max_caption_chars=50)
    assert [r["uri"] for r in res.records] == [f"{tmp_path}/a.mp4"]
    assert [(r.index, r.reason) for r in res.rejects] == [
        (1, "caption is 51 characters, over the limit of 50 (data.max_caption_chars)")]
    assert read_source("lift-inference", str(src), max_caption_chars=None).rejects == []
