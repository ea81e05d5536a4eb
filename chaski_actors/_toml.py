"""The shared base of the scenario and fault readers: one TOML table, typed.

Every error names the file, the full key and what was expected, so a person
editing a scenario can find the line without reading our code.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .errors import ConfigError


class TomlTable:
    """One table of a TOML file, known by where it came from."""

    def __init__(self, source: str, table: Mapping[str, Any], prefix: str) -> None:
        self.source = source
        self.table = table
        self.prefix = prefix

    def error(self, key: str, expected: str) -> ConfigError:
        value = self.table.get(key, "<missing>")
        return ConfigError(
            f"{self.source}: {self.prefix}{key} = {value!r}: expected {expected}"
        )

    def check_keys(self, allowed: Collection[str]) -> None:
        unknown = sorted(k for k in self.table if k not in allowed)
        if unknown:
            named = ", ".join(self.prefix + k for k in unknown)
            raise ConfigError(
                f"{self.source}: unknown key(s) {named}; "
                f"expected some of {', '.join(sorted(allowed))}"
            )
