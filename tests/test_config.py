"""Config: defaults, file, profiles, env and --set overrides, and one-line errors for bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from bhasha_build.core.config import ConfigError, available_profiles, load_config


def test_defaults_follow_the_seed_recipe() -> None:
    cfg = load_config(env={})
    assert cfg.model.name == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.model.max_seq_length == 2048 and cfg.model.load_in_4bit
    assert cfg.train.backend == "unsloth" and cfg.train.optim == "paged_adamw_8bit"
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cfg.export.quant == "Q4_K_M"


def test_profiles_exist_and_apply() -> None:
    assert {"gpu16gb", "tiny-cpu"} <= set(available_profiles())
    tiny = load_config(profile="tiny-cpu", env={})
    assert tiny.model.is_tiny and not tiny.model.load_in_4bit
    gpu = load_config(profile="gpu16gb", env={})
    assert gpu.train.gpu_memory_gib == 16 and gpu.model.load_in_4bit


def test_env_and_set_overrides_in_order() -> None:
    env = {"BHASHA_PROFILE": "tiny-cpu", "BHASHA__TRAIN__MAX_STEPS": "7", "BHASHA__LORA__R": "8"}
    cfg = load_config(env=env, overrides=["lora.r=4", 'run="x"'])
    assert cfg.model.is_tiny  # profile from env
    assert cfg.train.max_steps == 7  # env over profile
    assert cfg.lora.r == 4  # --set over env
    assert cfg.run == "x"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"overrides": ["train.no_such_knob=1"]}, "unknown config key 'train.no_such_knob'"),
    ({"env": {"BHASHA__NOPE__X": "1"}}, "unknown config key 'nope'"),
    ({"profile": "nope"}, "no profile 'nope'"),
    ({"overrides": ["lora.r=0"]}, "lora.r"),
    ({"overrides": ["train.max_steps"]}, "expected section.key=value"),
    ({"overrides": ['lora.target_modules=["q_proj","lm_head"]']}, "unknown modules ['lm_head']"),
    ({"overrides": ["data.mix_ratio=0.25"]}, "needs data.chat_input"),
    ({"overrides": ["model.tiny.hidden_size=300"]}, "multiple of 256"),
])
def test_bad_config_is_one_line_naming_the_key(kwargs: dict, expected: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as err:
        load_config(**kwargs)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_unknown_key_in_file_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nmax_stepz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.max_stepz'"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})


def test_run_dir_is_under_runs(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides=[f'runs_dir="{tmp_path}"', 'run="r1"'])
    assert cfg.run_dir == tmp_path / "r1"


def test_deploy_host_with_credentials_is_refused_before_anything_records_it() -> None:
    for source in ({"overrides": ['deploy.host="http://me:hunter2@gpu-box:11434"']},
                   {"env": {"BHASHA__DEPLOY__HOST": "https://me:hunter2@gpu-box"}}):
        with pytest.raises(ConfigError, match=r"deploy\.host: Ollama host .*has credentials in it") as err:
            load_config(**{"env": {}, **source})
        assert "hunter2" not in str(err.value)
    assert load_config(env={}, overrides=['deploy.host="https://gpu-box"']).deploy.host == "https://gpu-box"


def test_runs_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "runs"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=rf"runs_dir: {a_file} must be a folder, not a file$"):
        load_config(env={}, overrides=[f'runs_dir="{a_file}"'])
    with pytest.raises(ConfigError, match=rf"runs_dir: {a_file}/r must be a folder, not a file \({a_file} is not"):
        load_config(env={"BHASHA__RUNS_DIR": str(a_file / "r")})
    assert load_config(env={}, overrides=[f'runs_dir="{tmp_path / "new" / "runs"}"']).runs_dir  # to be made: fine
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "r1").write_text("")
    with pytest.raises(ConfigError, match=rf"run 'r1': {tmp_path}/ok/r1 must be a folder, not a file$"):
        load_config(env={}, overrides=[f'runs_dir="{tmp_path / "ok"}"', 'run="r1"'])


def test_deploy_host_with_a_query_string_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match=r"deploy\.host: Ollama host 'https://gpu-box/' has a query string") as err:
        load_config(env={}, overrides=['deploy.host="https://gpu-box/?token=hunter2"'])
    assert "hunter2" not in str(err.value)
