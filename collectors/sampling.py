"""Sampling policy: a rate per model and route, deterministic by request hash.

The decision is a pure function of the request bytes, so replaying the same traffic samples the
same requests. The request path computes only a CRC-32 of the body as it streams in (tens of
microseconds for 100 KB) and compares it with the *largest* configured rate; requests above it are
sampled out at once. The per-model rate needs the parsed body, so the worker finishes the decision
with :meth:`SamplingPolicy.keep` off the request path, using the same hash value.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SamplingPolicy", "hash_fraction", "crc32_update", "DEFAULT_ROUTE"]

DEFAULT_ROUTE = "/v1/chat/completions"

_MASK64 = (1 << 64) - 1


def crc32_update(crc: int, chunk: bytes) -> int:
    """Fold one body chunk into a running CRC-32 (start from 0)."""
    return zlib.crc32(chunk, crc)


def hash_fraction(crc: int, length: int) -> float:
    """Map a body's CRC-32 and length to a well-mixed fraction in [0, 1).

    CRC-32 is linear; a splitmix64 finaliser spreads it so that similar bodies do not land in
    similar places of the unit interval.
    """
    z = ((crc << 32) | (length & 0xFFFFFFFF)) & _MASK64
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def _check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampling rate for {name!r} must be within [0, 1], got {rate}")
    return rate


@dataclass(frozen=True)
class SamplingPolicy:
    """``default`` rate, overridden per ``model`` or per ``"model:route"`` (most specific wins)."""

    default: float = 0.1
    rates: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_rate("default", self.default)
        checked = {str(k): _check_rate(str(k), v) for k, v in dict(self.rates).items()}
        object.__setattr__(self, "rates", checked)
        object.__setattr__(self, "_max", max([self.default, *checked.values()]))

    @property
    def max_rate(self) -> float:
        """The largest rate any model/route can have: the request path's pre-filter."""
        return self._max  # type: ignore[attr-defined,no-any-return]

    def rate(self, model: str, route: str = DEFAULT_ROUTE) -> float:
        rates = self.rates
        key = f"{model}:{route}"
        if key in rates:
            return rates[key]
        if model in rates:
            return rates[model]
        return self.default

    def maybe(self, fraction: float) -> bool:
        """Request-path pre-filter: ``False`` means sampled out whatever the model is."""
        return fraction < self.max_rate

    def keep(self, fraction: float, model: str, route: str = DEFAULT_ROUTE) -> bool:
        """Final decision once the model is known."""
        return fraction < self.rate(model, route)
