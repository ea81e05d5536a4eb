"""Latency distributions for simulated links.

An edge's ``latency`` is a number of seconds, a mapping such as
``{"dist": "lognormal", "median": 0.02, "sigma": 0.3}``, or the same written
as a string, ``"lognormal(median=0.02, sigma=0.3)"``, for graph files (GML and
GraphML cannot hold mappings). Every distribution also knows its mean, which
routing uses as the edge weight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from random import Random
from typing import Any

from chaski_actors.errors import ConfigError

__all__ = ["Latency", "parse_latency"]

_Sampler = Callable[[Random], float]


@dataclass(frozen=True, slots=True)
class Latency:
    """A named distribution of one-way delays, in seconds."""

    name: str
    params: tuple[tuple[str, float], ...]
    mean: float
    _sample: _Sampler

    def sample(self, rng: Random) -> float:
        return max(0.0, self._sample(rng))

    def __str__(self) -> str:
        if self.name == "fixed":
            return f"{self.mean * 1000:g} ms"
        args = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}({args})"


def _fixed(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    value = p["value"]
    return value, lambda rng: value


def _uniform(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    low, high = p["low"], p["high"]
    if high < low:
        raise ValueError("high must not be below low")
    return (low + high) / 2, lambda rng: rng.uniform(low, high)


def _normal(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    # Truncated at zero by Latency.sample; the mean ignores the truncation,
    # which is negligible for the sd << mean that sensible links have.
    mean, sd = p["mean"], p["sd"]
    return mean, lambda rng: rng.gauss(mean, sd)


def _lognormal(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    median, sigma = p["median"], p["sigma"]
    mu = math.log(median)
    return median * math.exp(sigma * sigma / 2), lambda rng: rng.lognormvariate(
        mu, sigma
    )


def _exponential(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    base, mean = p.get("base", 0.0), p["mean"]
    return base + mean, lambda rng: base + rng.expovariate(1.0 / mean)


def _pareto(p: Mapping[str, float]) -> tuple[float, _Sampler]:
    scale, shape = p["scale"], p["shape"]
    if shape <= 1:
        raise ValueError("shape must exceed 1 for the mean to exist")
    return scale * shape / (shape - 1), lambda rng: scale * rng.paretovariate(shape)


_DISTRIBUTIONS: dict[
    str, tuple[tuple[str, ...], Callable[[Mapping[str, float]], tuple[float, _Sampler]]]
] = {
    "fixed": (("value",), _fixed),
    "uniform": (("low", "high"), _uniform),
    "normal": (("mean", "sd"), _normal),
    "lognormal": (("median", "sigma"), _lognormal),
    "exponential": (("mean", "base"), _exponential),
    "pareto": (("scale", "shape"), _pareto),
}

_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def _parse_string(text: str) -> dict[str, Any]:
    match = _CALL.match(text)
    if match is None:
        raise ConfigError(
            f"latency {text!r}: expected seconds or 'name(key=value, ...)'"
        )
    spec: dict[str, Any] = {"dist": match.group(1)}
    for part in filter(None, (p.strip() for p in match.group(2).split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"latency {text!r}: {part!r} is not key=value")
        spec[key.strip()] = value.strip()
    return spec


def parse_latency(value: object) -> Latency:
    """Turn an edge's ``latency`` attribute into a :class:`Latency`."""
    if isinstance(value, Latency):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or math.isnan(value):
            raise ConfigError(f"latency {value!r}: must be a delay >= 0 seconds")
        seconds = float(value)
        return Latency("fixed", (("value", seconds),), seconds, lambda rng: seconds)
    if isinstance(value, str):
        try:
            return parse_latency(float(value))
        except ValueError:
            value = _parse_string(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"latency {value!r}: expected seconds or a distribution")

    spec = dict(value)
    name = spec.pop("dist", None)
    if name not in _DISTRIBUTIONS:
        raise ConfigError(
            f"latency {value!r}: 'dist' must be one of {', '.join(_DISTRIBUTIONS)}"
        )
    keys, build = _DISTRIBUTIONS[name]
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ConfigError(f"latency {value!r}: unknown parameter(s) {unknown}")
    try:
        params = {k: float(v) for k, v in spec.items()}
        mean, sampler = build(params)
    except KeyError as exc:
        raise ConfigError(f"latency {value!r}: missing parameter {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"latency {value!r}: {exc}") from exc

    if name == "fixed":
        return parse_latency(params["value"])
    ordered = tuple((k, params[k]) for k in keys if k in params)
    return Latency(name, ordered, mean, sampler)
