"""Config loading: dotted overrides, errors that name the dotted key, {run_root} expansion, bad files."""

from __future__ import annotations

import pytest

from lift_core.config import ConfigError, PipelineConfig, load_config, parse_overrides, read_overrides_file


# --------------------------------------------------------------------------- parse_overrides
def test_overrides_become_a_nested_tree_of_yaml_values():
    tree = parse_overrides([
        "run_root=/tmp/r",
        "critic.train.lr=0.0003",
        "critic.train.max_steps=12",
        "critic.train.use_gpu=true",
        "data.datasets=[a, b]",
        "rescore.min_mean_reward=null",
        "name=a=b",  # only the first '=' separates key and value
        " seed =7",
        "rescore.critic=",  # an empty value is the empty string, not null
    ])
    assert tree == {
        "run_root": "/tmp/r",
        "critic": {"train": {"lr": 0.0003, "max_steps": 12, "use_gpu": True}},
        "data": {"datasets": ["a", "b"]},
        "rescore": {"min_mean_reward": None, "critic": ""},
        "name": "a=b",
        "seed": 7,
    }
    assert parse_overrides(None) == {} and parse_overrides([]) == {}
    # YAML 1.1 reads "3e-4" as a string; the typed field still gets the float.
    assert parse_overrides(["critic.train.lr=3e-4"]) == {"critic": {"train": {"lr": "3e-4"}}}
    assert load_config(None, ["critic.train.lr=3e-4"]).critic.train.lr == 3e-4


def test_malformed_overrides_say_which():
    with pytest.raises(ConfigError, match="override 'critic.train' is not of the form key=value"):
        parse_overrides(["critic.train"])
    with pytest.raises(ConfigError, match="override 'seed.x': 'seed' is not a section"):
        parse_overrides(["seed=1", "seed.x=2"])


def test_an_overrides_file_skips_comments_and_blank_lines_and_names_a_bad_line(tmp_path):
    path = tmp_path / "x.overrides"
    path.write_text("# a comment\n\n  critic.train.lr=0.5  \n   # indented comment\nseed=3\n")
    assert read_overrides_file(path) == ["critic.train.lr=0.5", "seed=3"]
    path.write_text("seed=3\ncritic.train\n")
    with pytest.raises(ConfigError, match="override 'critic.train' is not of the form key=value"):
        read_overrides_file(path)
    with pytest.raises(ConfigError, match="cannot read overrides .*missing"):
        read_overrides_file(tmp_path / "missing")


def test_the_demos_tiny_overrides_shrink_every_stage_and_keep_its_models():
    demo = load_config("configs/demo.yaml")
    tiny = load_config("configs/demo.yaml", read_overrides_file("configs/demo-tiny.overrides"))
    assert (tiny.critic.model, tiny.t2v.model) == (demo.critic.model, demo.t2v.model)
    assert tiny.critic.train.max_steps < demo.critic.train.max_steps
    assert tiny.align.train.max_steps < demo.align.train.max_steps
    assert tiny.data.synthetic.n < demo.data.synthetic.n


# --------------------------------------------------------------------------- load_config
@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: mine\n"
        "run_root: /data/runs/x\n"
        "critic:\n"
        "  train: {lr: 0.01, max_steps: 50}\n"
        "decode: {frames: 4}\n"
    )
    return path


def test_overrides_win_over_the_file_and_keep_its_siblings(config_file):
    cfg = load_config(config_file, ["critic.train.lr=0.5", "decode.height=32"])
    assert cfg.critic.train.lr == 0.5 and cfg.critic.train.max_steps == 50  # sibling kept from the file
    assert (cfg.decode.frames, cfg.decode.height) == (4, 32)
    assert cfg.name == "mine" and cfg.decode.width == PipelineConfig().decode.width
    assert load_config(config_file).critic.train.lr == 0.01


def test_defaults_without_a_file():
    cfg = load_config(None, ["seed=3"])
    assert cfg.seed == 3 and cfg.run_root == "./runs/default"
    assert cfg.model_dump() == {**load_config().model_dump(), "seed": 3}


def test_the_project_configs_load():
    demo = load_config("configs/demo.yaml", ["run_root=/tmp/demo"])
    assert demo.run_root == "/tmp/demo" and demo.data.synthetic is not None and demo.data.datasets
    assert load_config("configs/lift-cogvideox-2b.yaml").data.datasets


def test_a_subsection_given_in_part_keeps_its_fields_defaults(tmp_path):
    """Overriding one key of a sub-section whose defaults are its parent field's (not its class's) keeps
    the others: before, `t2v.pretrain.denoiser.max_steps=2400` silently reset the batch to TrainConfig's 8."""
    from lift_core.config import AlignConfig, T2VPretrainConfig, TrainConfig

    cfg = load_config(None, ["t2v.pretrain.vae.max_steps=7", "align.train.max_steps=3"])
    vae, default_vae = cfg.t2v.pretrain.vae, T2VPretrainConfig().vae
    assert vae.max_steps == 7 and vae.lr == default_vae.lr != TrainConfig().lr
    assert vae.checkpoint_every == default_vae.checkpoint_every != TrainConfig().checkpoint_every
    assert cfg.align.train.max_steps == 3 and cfg.align.train.lr == AlignConfig().train.lr != TrainConfig().lr
    part = tmp_path / "part.yaml"
    part.write_text("align:\n  lora: {r: 4}\n")
    lora = load_config(part).align.lora
    assert lora.r == 4 and lora.target_modules == AlignConfig().lora.target_modules
    with pytest.raises(ConfigError, match=r"unknown key 'align.train.lrr'"):
        load_config(None, ["align.train.lrr=1"])


def test_unknown_keys_name_their_dotted_path(config_file, tmp_path):
    with pytest.raises(ConfigError, match=r"invalid config .*run.yaml: unknown key 'critic.train.lrr'"):
        load_config(config_file, ["critic.train.lrr=1"])
    typo = tmp_path / "typo.yaml"
    typo.write_text("decode:\n  framez: 8\nrescore: {stor: x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(typo)
    assert "unknown key 'decode.framez'" in str(err.value) and "unknown key 'rescore.stor'" in str(err.value)
    with pytest.raises(ConfigError, match=r"invalid config <defaults>: unknown key 'nope'"):
        load_config(None, ["nope=1"])


def test_wrong_values_name_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"key 'decode.frames': .*integer.* \(got 'many'\)"):
        load_config(None, ["decode.frames=many"])
    with pytest.raises(ConfigError, match=r"key 'decode.batch_size': .*greater than or equal to 1 \(got 0\)"):
        load_config(None, ["decode.batch_size=0"])
    with pytest.raises(ConfigError, match=r"key 'decode': .*\(got 3\)"):
        load_config(None, ["decode=3"])


def test_run_root_expands_in_every_given_value(tmp_path, config_file):
    # Quoted: an override value is YAML, where a bare "{" starts a mapping.
    cfg = load_config(None, [f"run_root={tmp_path}", "critic.model='{run_root}/critic'",
                             "rescore.generations=['{run_root}/gen', 's3://b/{run_root}']", "name='{run_root}-name'"])
    assert cfg.critic.model == f"{tmp_path}/critic" and cfg.name == f"{tmp_path}-name"
    assert cfg.rescore.generations == [f"{tmp_path}/gen", f"s3://b/{tmp_path}"]
    # The run root comes from the file unless overridden; the file's own values expand too.
    config_file.write_text(config_file.read_text() + "align: {cache_root: '{run_root}/cache'}\n")
    assert load_config(config_file).align.cache_root == "/data/runs/x/cache"
    assert load_config(config_file, ["run_root=/elsewhere"]).align.cache_root == "/elsewhere/cache"
    # Without any run_root, the default one expands.
    assert load_config(None, ["critic.model='{run_root}/c'"]).critic.model == "./runs/default/c"


def test_a_bare_placeholder_override_is_its_text_not_a_yaml_mapping(tmp_path):
    # Unquoted, "{run_root}/x" is not valid YAML and "{run_root}" is a YAML mapping {run_root: null}:
    # both are the text the user typed (issue 18), and expand like any other value.
    assert parse_overrides(["critic.model={run_root}/x", "name={run_root}", "a.b={x, y}"]) == {
        "critic": {"model": "{run_root}/x"}, "name": "{run_root}", "a": {"b": "{x, y}"}}
    cfg = load_config(None, [f"run_root={tmp_path}", "critic.model={run_root}/critic", "name={run_root}"])
    assert cfg.critic.model == f"{tmp_path}/critic" and cfg.name == str(tmp_path)
    # Other text that is not YAML stays text; lists, numbers and real mappings still parse.
    assert parse_overrides(["name=@x", "seed=3", "data.datasets=[a, b]", "data.split={salt: s}"]) == {
        "name": "@x", "seed": 3, "data": {"datasets": ["a", "b"], "split": {"salt": "s"}}}
    # A value of the wrong type still names its key.
    with pytest.raises(ConfigError, match=r"key 'data.datasets'"):
        load_config(None, ["data.datasets={run_root}/x"])


def test_max_caption_chars_is_a_bounded_data_setting():
    from lift_core.data.sources import DEFAULT_MAX_CAPTION_CHARS

    assert PipelineConfig().data.max_caption_chars == DEFAULT_MAX_CAPTION_CHARS == 4000
    assert load_config(None, ["data.max_caption_chars=100"]).data.max_caption_chars == 100
    with pytest.raises(ConfigError, match=r"key 'data.max_caption_chars'"):
        load_config(None, ["data.max_caption_chars=0"])


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("critic:\n  train: {lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"config .*bad.yaml is not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping at the top level"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).model_dump() == load_config().model_dump()
