"""One config: defaults, then the home's TOML, then SUPPORTBOT_* variables, then flags."""

import pytest

from chatbot import ConfigError, load_config, save_settings


def test_layers_override_in_order(tmp_path):
    (tmp_path / "config.toml").write_text('kb = "toml"\n[retrieval]\ncandidates = 20\nlexical_weight = 0.3\n')
    env = {"SUPPORTBOT_RETRIEVAL_CANDIDATES": "30", "SUPPORTBOT_KB": "env"}
    config = load_config(tmp_path, ["kb=flag"], env=env)
    assert (config.kb, config.retrieval.candidates, config.retrieval.lexical_weight) == ("flag", 30, 0.3)
    assert load_config(tmp_path, env={}).retrieval.candidates == 20
    assert load_config(tmp_path / "other", env={}).retrieval.candidates == 50  # the default


def test_home_comes_from_flag_then_environment(tmp_path):
    assert load_config(env={"SUPPORTBOT_HOME": str(tmp_path)}).home == tmp_path
    assert load_config(tmp_path / "x", env={"SUPPORTBOT_HOME": str(tmp_path)}).home == tmp_path / "x"


@pytest.mark.parametrize(
    "toml, env, flags, message",
    [
        ("[retrieval]\ncandidtes = 3\n", {}, [], "unknown setting 'candidtes'"),
        ("[retreival]\nx = 1\n", {}, [], "unknown section [retreival]"),
        ("", {"SUPPORTBOT_RETRIEVAL_CANDIDATES": "many"}, [], "SUPPORTBOT_RETRIEVAL_CANDIDATES: expected int"),
        ("", {"SUPPORTBOT_NOPE": "1"}, [], "SUPPORTBOT_NOPE: unknown setting"),
        ("", {}, ["retrieval.embed_answers=maybe"], "expected bool"),
        ("", {}, ["kb"], "expected KEY=VALUE"),
        ("kb = [\n", {}, [], "config.toml"),
    ],
)
def test_bad_settings_name_their_source(tmp_path, toml, env, flags, message):
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(tmp_path, flags, env=env)


def test_kb_names_cannot_escape_the_home(tmp_path):
    config = load_config(tmp_path, ["kb=../../etc"], env={})
    with pytest.raises(ConfigError, match="knowledge base name"):
        config.kb_dir()


def test_saved_settings_round_trip(tmp_path):
    config = load_config(tmp_path, env={})
    save_settings(config, {"retrieval.calibration": [1.5, 2.0, 0.5, -3.0], "kb": "shop"})
    again = load_config(tmp_path, env={})
    assert again.retrieval.calibration == [1.5, 2.0, 0.5, -3.0] and again.kb == "shop"
    assert config.kb == "shop"
