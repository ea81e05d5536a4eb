"""Settings: defaults, validation, and the three ways of loading them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from chaski_actors.codec import DEFAULT_MAX_FRAME_SIZE
from chaski_actors.errors import ConfigError
from chaski_actors.settings import OVERFLOW_POLICIES, Settings


def test_defaults_are_valid_and_as_documented() -> None:
    settings = Settings()

    assert settings.connect_timeout_s == 5.0
    assert settings.call_timeout_s == 30.0
    assert settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 1 << 20
    assert settings.datagram_max_size == 1200
    assert settings.overflow == "wait"
    assert settings.reconnect_attempts == 0


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().inbox_size = 3  # type: ignore[misc]


def test_describe_gives_every_field_with_its_default_and_reasoning() -> None:
    rows = Settings.describe()

    assert [name for name, _, _ in rows] == [
        f.name for f in dataclasses.fields(Settings)
    ]
    # Looked up by name: other areas append their own fields.
    by_name = {name: (default, doc) for name, default, doc in rows}
    assert by_name["datagram_max_size"][0] == 1200
    assert "MTU" in by_name["datagram_max_size"][1]
    assert all(len(doc) > 40 for _, _, doc in rows)


def test_int_given_for_a_float_field_becomes_a_float() -> None:
    settings = Settings(connect_timeout_s=2)

    assert settings.connect_timeout_s == 2.0
    assert type(settings.connect_timeout_s) is float


# Validation: each message names the field, the value and what is expected.


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("connect_timeout_s", 0, "a finite number > 0"),
        ("handshake_timeout_s", -1.0, "a finite number > 0"),
        ("ping_timeout_s", math.nan, "a finite number > 0"),
        ("call_timeout_s", math.inf, "a finite number > 0"),
        ("keepalive_interval_s", "1", "a finite number > 0"),
        ("dead_after_s", True, "a finite number > 0"),
        ("reconnect_initial_s", 0.0, "a finite number > 0"),
        ("reconnect_max_s", -10, "a finite number > 0"),
        ("reconnect_multiplier", 0.5, "a finite number >= 1"),
        ("reconnect_jitter", 1.0, "a fraction"),
        ("reconnect_jitter", -0.1, "a fraction"),
        ("reconnect_attempts", -1, "an integer >= 0"),
        ("reconnect_attempts", 1.0, "an integer >= 0"),
        ("max_frame_size", 0, "an integer from 1 to"),
        ("max_frame_size", 2**32, "an integer from 1 to"),
        ("inbox_size", 0, "an integer >= 1"),
        ("send_buffer_frames", False, "an integer >= 1"),
        ("overflow", "drop", "one of wait, drop-oldest, drop-newest"),
        ("overflow", 1, "one of"),
        ("max_connections", 2.5, "an integer >= 1"),
        ("datagram_max_size", 70_000, "an integer from 1 to 65507"),
        ("discovery_ttl", 0, "an integer >= 1"),
    ],
)
def test_invalid_value_names_field_value_and_expectation(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(**{field: value})  # type: ignore[arg-type]

    message = str(caught.value)
    assert message.startswith(f"{field} = {value!r} is invalid")
    assert expected in message


def test_dead_after_must_exceed_keepalive_interval() -> None:
    with pytest.raises(
        ConfigError, match=r"dead_after_s = 2\.0 .* keepalive_interval_s"
    ):
        Settings(keepalive_interval_s=2.0, dead_after_s=2.0)


def test_reconnect_max_must_not_be_below_initial() -> None:
    with pytest.raises(ConfigError, match=r"reconnect_max_s = 0\.5 .* at least"):
        Settings(reconnect_initial_s=1.0, reconnect_max_s=0.5)


def test_every_overflow_policy_is_accepted() -> None:
    for policy in OVERFLOW_POLICIES:
        assert Settings(overflow=policy).overflow == policy


# from_mapping and replace


def test_from_mapping_applies_values_and_keeps_other_defaults() -> None:
    settings = Settings.from_mapping({"inbox_size": 8, "ping_timeout_s": 1})

    assert settings == Settings(inbox_size=8, ping_timeout_s=1.0)


def test_from_mapping_refuses_unknown_keys_and_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"conect_timeout_s": 1.0}, source="node.toml")

    message = str(caught.value)
    assert message.startswith("node.toml: unknown setting 'conect_timeout_s'")
    assert "did you mean 'connect_timeout_s'?" in message
    assert "valid settings are connect_timeout_s, handshake_timeout_s" in message


def test_from_mapping_wrong_type_names_source_and_field() -> None:
    with pytest.raises(ConfigError, match=r"^here: inbox_size = '8' is invalid"):
        Settings.from_mapping({"inbox_size": "8"}, source="here")


def test_replace_returns_a_validated_copy() -> None:
    base = Settings()

    changed = base.replace(inbox_size=16, overflow="drop-oldest")

    assert (changed.inbox_size, changed.overflow) == (16, "drop-oldest")
    assert base.inbox_size == 1024
    with pytest.raises(ConfigError, match="inbox_size = -1"):
        base.replace(inbox_size=-1)
    with pytest.raises(ConfigError, match="unknown setting 'inbox'"):
        base.replace(inbox=16)


# TOML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chaski.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_from_toml_reads_the_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[chaski]\nconnect_timeout_s = 2\noverflow = "drop-newest"\n'
        "[other]\nunrelated = 1\n",
    )

    settings = Settings.from_toml(path)

    assert settings == Settings(connect_timeout_s=2.0, overflow="drop-newest")


def test_from_toml_reads_a_dotted_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool.chaski]\ninbox_size = 4\n")

    assert Settings.from_toml(path, table="tool.chaski").inbox_size == 4


def test_from_toml_without_the_table_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[something_else]\nx = 1\n")

    assert Settings.from_toml(path) == Settings()


def test_from_toml_error_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[chaski]\ndiscovery_ttl = 0\n")

    with pytest.raises(ConfigError) as caught:
        Settings.from_toml(path)

    assert str(caught.value).startswith(f"{path} [chaski]: discovery_ttl = 0")


def test_from_toml_unknown_key_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[chaski]\ninbox = 4\n")

    with pytest.raises(ConfigError, match=r"chaski\.toml \[chaski\]: unknown setting"):
        Settings.from_toml(path)


def test_from_toml_table_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "chaski = 3\n")

    with pytest.raises(ConfigError, match=r"\[chaski\] must be a table"):
        Settings.from_toml(path)


def test_from_toml_malformed_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[chaski\n")

    with pytest.raises(ConfigError, match="is not valid TOML") as caught:
        Settings.from_toml(path)
    assert str(path) in str(caught.value)
    assert caught.value.__cause__ is not None


def test_from_toml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError, match=r"cannot read settings file .*absent\.toml"):
        Settings.from_toml(path)


# Environment


def test_from_env_parses_by_field_type_and_ignores_other_variables() -> None:
    environ = {
        "CHASKI_CONNECT_TIMEOUT_S": "2.5",
        "CHASKI_INBOX_SIZE": " 16 ",
        "CHASKI_OVERFLOW": "drop-oldest",
        "CHASKI_DEAD_AFTER_S": "10",
        "PATH": "/usr/bin",
    }

    settings = Settings.from_env(environ)

    assert settings == Settings(
        connect_timeout_s=2.5, inbox_size=16, overflow="drop-oldest", dead_after_s=10
    )


def test_from_env_with_another_prefix() -> None:
    settings = Settings.from_env({"APP_MAX_CONNECTIONS": "3"}, prefix="APP_")

    assert settings.max_connections == 3


def test_from_env_unparsable_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"CHASKI_INBOX_SIZE='1\.5' is invalid"):
        Settings.from_env({"CHASKI_INBOX_SIZE": "1.5"})
    with pytest.raises(ConfigError, match="CHASKI_CALL_TIMEOUT_S='soon' is invalid"):
        Settings.from_env({"CHASKI_CALL_TIMEOUT_S": "soon"})


def test_from_env_out_of_range_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHASKI_PING_TIMEOUT_S": "-1"})

    message = str(caught.value)
    assert message.startswith("environment variable CHASKI_PING_TIMEOUT_S:")
    assert "ping_timeout_s = -1.0 is invalid" in message


def test_from_env_unknown_variable_with_the_prefix_is_refused() -> None:
    with pytest.raises(ConfigError, match="CHASKI_INBOX: unknown setting 'inbox'"):
        Settings.from_env({"CHASKI_INBOX": "3"})


def test_from_env_conflicting_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"environment variables CHASKI_\*: dead"):
        Settings.from_env({"CHASKI_KEEPALIVE_INTERVAL_S": "9"})
