"""A quantile sketch with bounded memory: log-spaced buckets, 1 % relative error."""

from __future__ import annotations

import math

__all__ = ["Sketch"]

_GAMMA = 1.02
_LOG_GAMMA = math.log(_GAMMA)
#: Durations under this count as this (1 µs): the bucket index stays bounded.
_FLOOR = 1e-6


class Sketch:
    """Counts durations in buckets ``(g^(i-1), g^i]`` (g = 1.02); a quantile is within 1 %."""

    __slots__ = ("_buckets", "count", "maximum", "minimum")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, value: float) -> None:
        """Count one duration (seconds)."""
        index = math.ceil(math.log(max(value, _FLOOR)) / _LOG_GAMMA)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)

    def merge(self, other: Sketch) -> None:
        """Add another sketch's counts."""
        for index, count in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + count
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float | None:
        """Return the ``q`` quantile (0..1), or ``None`` when empty."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen > rank:
                # The bucket's middle, in log space: at most sqrt(g) - 1 (1 %) off.
                return self._clamp(_GAMMA ** (index - 0.5))
        return self.maximum

    def _clamp(self, value: float) -> float:
        """Keep an estimate within the values seen: p50 of one value is that value."""
        return float(min(max(value, self.minimum), self.maximum))
