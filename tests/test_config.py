"""Settings: config.toml documents the defaults exactly; bad files name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, Settings, load_settings, settings_from_dict

TOP = Path(__file__).resolve().parent.parent


def test_config_toml_is_exactly_the_defaults() -> None:
    data = tomllib.loads((TOP / "config.toml").read_text(encoding="utf-8"))
    assert settings_from_dict(data, "config.toml") == Settings()


def test_every_default_key_is_documented_in_config_toml() -> None:
    data = tomllib.loads((TOP / "config.toml").read_text(encoding="utf-8"))
    defaults = Settings().model_dump()

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("weights", "tiers"):
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    assert keys(defaults) == keys(data)


def test_a_user_file_only_needs_the_keys_it_changes(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[dwell]\nmin_code_lines = 12\n")
    settings = load_settings(cfg)
    assert settings.dwell.min_code_lines == 12
    assert settings.dwell.tiers == Settings().dwell.tiers


def test_repo_local_loopmon_toml_is_found(tmp_path: Path) -> None:
    (tmp_path / "loopmon.toml").write_text('repo_id = "my-loop"\n')
    assert load_settings(repo=tmp_path).repo_id == "my-loop"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[dwell]\ntierz = 3\n", "dwell.tierz"),
        ("[dwell]\nmin_code_lines = 'many'\n", "dwell.min_code_lines"),
        ("[scores]\nweights = { summary = 0.5, code_diff = 0.5, semantic = 0.5 }\n", "scores.weights"),
        ("[bus]\nheartbeat_seconds = -1\n", "bus.heartbeat_seconds"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"{cfg}: {key}:" in str(err.value)


def test_bad_config_on_the_command_line_exits_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[alerts]\nbulky_bytes = 'big'\n")
    status = main(["--config", str(cfg), "run", "--repo", str(tmp_path), "--headless", "--duration", "0.1"])
    err = capsys.readouterr().err
    assert status == 2
    assert "alerts.bulky_bytes" in err
    assert err.count("\n") == 1


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[dwell\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)
