"""Allow rules from the configuration, matched against every calling frame."""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import FrameType

from loophound._frames import FrameKinds

__all__ = ["AllowRules"]


class AllowRules:
    """Rules ``operation:NAME``, ``module:PREFIX``, ``function:MODULE.QUALNAME``, ``path:PREFIX``.

    A rule matches when the operation is named, or when any frame of the calling stack
    is in the module, function or file tree it names. Remembers which rules matched so
    that stale ones can be listed at uninstall.
    """

    def __init__(self, rules: Iterable[str], kinds: FrameKinds, depth_limit: int = 256) -> None:
        self._rules = tuple(rules)
        self._kinds = kinds
        self._limit = depth_limit
        self._operations: dict[str, str] = {}
        self._modules: list[tuple[str, str]] = []
        self._functions: dict[str, str] = {}
        self._paths: list[tuple[str, str]] = []
        for rule in self._rules:
            kind, _, target = rule.partition(":")
            if kind == "operation":
                self._operations[target] = rule
            elif kind == "module":
                self._modules.append((target, rule))
            elif kind == "function":
                self._functions[target] = rule
            else:
                self._paths.append((os.path.abspath(target), rule))
        self._needs_frames = bool(self._modules or self._functions or self._paths)
        self.used: set[str] = set()

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules, in the order they were given."""
        return self._rules

    def __bool__(self) -> bool:
        return bool(self._rules)

    def match(self, operation: str, frame: FrameType | None) -> str | None:
        """Return the rule that allows this call, or ``None``."""
        rule = self._operations.get(operation)
        if rule is None and self._needs_frames:
            rule = self._match_frames(frame)
        if rule is not None:
            self.used.add(rule)
        return rule

    def _match_frames(self, frame: FrameType | None) -> str | None:
        depth = 0
        while frame is not None and depth < self._limit:
            module = self._kinds.module_of(frame)
            for prefix, rule in self._modules:
                if module == prefix or module.startswith(prefix + "."):
                    return rule
            if self._functions:
                found = self._functions.get(f"{module}.{frame.f_code.co_qualname}")
                if found is not None:
                    return found
            if self._paths:
                filename = frame.f_code.co_filename
                for prefix, rule in self._paths:
                    if filename.startswith(prefix):
                        return rule
            frame = frame.f_back
            depth += 1
        return None

    def unused(self) -> tuple[str, ...]:
        """Return the rules that never matched, in the order they were given."""
        return tuple(rule for rule in self._rules if rule not in self.used)
