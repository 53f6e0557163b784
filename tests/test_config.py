"""Settings: layers, validation messages, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from falcon.config import Secrets, load_settings
from falcon.errors import ConfigError


def test_defaults_use_sqlite_in_home(tmp_path: Path) -> None:
    s = load_settings(environ={"FALCON_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.is_sqlite
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'falcon.db'}"
    assert s.market_data_dir == tmp_path / "market_data"
    assert s.trading.starting_cash == 100_000.0


def test_layers_file_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "falcon.toml"
    cfg.write_text('[data]\ns3_bucket = "from-file"\nsync_retries = 2\n[web]\nport = 9000\n')
    env = {"FALCON_CONFIG": str(cfg), "FALCON_DATA__S3_BUCKET": "from-env"}
    s = load_settings(environ=env)
    assert s.data.s3_bucket == "from-env"  # env beats file
    assert s.data.sync_retries == 2  # file beats default
    assert s.web.port == 9000
    s2 = load_settings({"data.s3_bucket": "from-cli"}, environ=env)
    assert s2.data.s3_bucket == "from-cli"  # CLI beats env
    assert s2.source_file == cfg


def test_database_url_from_env_selects_postgres() -> None:
    s = load_settings(environ={"FALCON_DATABASE_URL": "postgresql://u:p@db/falcon"})
    assert not s.is_sqlite
    assert s.effective_database_url == "postgresql://u:p@db/falcon"


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(AttributeError):
        s.home = Path("/x")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FALCON_WEB__PORT": "abc"}, "web.port: 'abc' is not an integer"),
        ({"FALCON_WEB__PORT": "70000"}, "web.port: must be in 1..65535"),
        ({"FALCON_TRADING__COMMISSION": "nan"}, "trading.commission: 'nan' is not a finite number"),
        ({"FALCON_WEB__SECURE_COOKIES": "maybe"}, "web.secure_cookies: 'maybe' is not a boolean"),
        ({"FALCON_LOG__LEVEL": "LOUD"}, "log.level: 'LOUD' is not one of"),
        ({"FALCON_DATA__NOPE": "1"}, "data.nope: unknown setting"),
        ({"FALCON_NOSECTION__X": "1"}, "FALCON_NOSECTION__X: unknown settings section"),
        ({"FALCON_DATABASE_URL": "mysql://x"}, "database_url: must start with"),
        ({"FALCON_TIMEZONE": "Mars/Olympus"}, "timezone: unknown time zone"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_toml_and_unknown_keys_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "falcon.toml"
    cfg.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={"FALCON_CONFIG": str(cfg)})
    cfg.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour: unknown setting"):
        load_settings(environ={"FALCON_CONFIG": str(cfg)})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(environ={"FALCON_CONFIG": str(tmp_path / "missing.toml")})


def test_secrets_only_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "falcon.toml"
    cfg.write_text('[data]\ns3_secret_access_key = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FALCON_CONFIG": str(cfg)})
    assert "FALCON_S3_SECRET_ACCESS_KEY" in str(info.value)
    assert "hunter2" not in str(info.value)

    s = load_settings(
        environ={"FALCON_S3_SECRET_ACCESS_KEY": "hunter2", "FALCON_LLM_API_KEY": "sk"}
    )
    assert s.secrets.s3_secret_access_key == "hunter2"
    assert s.secrets.massive_api_key is None
    shown = repr(s) + repr(s.secrets) + str(s.secrets)
    assert "hunter2" not in shown and "sk'" not in shown
    assert "s3_secret_access_key=<set>" in repr(s.secrets)
    assert Secrets.env_name("llm_api_key") == "FALCON_LLM_API_KEY"
