"""Bad values for every loophound setting, derived from loophound._config's validator table.

A setting added to ``Config`` gets its cases here without editing this file, as long as
its validator is one of the known kinds, recognized by the message it gives for a value
of no known type (a bool, a number range, a choice, a list, a path, a callable, a
provider). A validator of a new kind makes ``keyword_cases`` fail and ask for it to be
taught here. Imported by test_bad_input.py and by the Django subprocess it starts.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from loophound._config import _CODE_ONLY, _VALIDATORS, ENV_PREFIX
from loophound.exceptions import ConfigurationError

_RANGE = re.compile(r"^an? (number|integer) from (\S+) to (\S+)$")
#: Text that no setting takes.
BOGUS = "bogus-value"


class Opaque:
    """A value of a type no setting takes."""

    def __repr__(self) -> str:
        return "<opaque test value>"


WRONG_TYPE = Opaque()


@dataclass(frozen=True)
class Bad:
    """A bad value for ``key`` and what the error message must show."""

    key: str
    value: object
    #: The bad value as the message shows it.
    shown: str
    #: The valid choices as the message states them (the validator's own "expected" text).
    choices: str

    @property
    def id(self) -> str:
        """Return a readable test id."""
        return f"{self.key}={self.value!r}"[:60]


def expected(key: str, value: object, source: str = "argument") -> str | None:
    """Return the "expected ..." text of the error for ``value``, or None when it is valid."""
    try:
        _VALIDATORS[key](key, source, value)
    except ConfigurationError as exc:
        return str(exc).split("; expected ", 1)[1].removesuffix(".")
    return None


def _bad(key: str, value: object, source: str = "argument") -> Bad:
    choices = expected(key, value, source)
    if choices is None:
        raise AssertionError(f"{key}={value!r} was expected to be refused")
    try:
        _VALIDATORS[key](key, source, value)
    except ConfigurationError as exc:
        message = str(exc)
    shown = next(
        (text for text in (repr(value), *_element_reprs(value)) if f": {text};" in message),
        repr(value),
    )
    return Bad(key, value, shown, choices)


def _element_reprs(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [repr(item) for item in value]
    return []


def _numbers(low: float, high: float, integer: bool) -> tuple[float, float]:
    below = low - 1 if integer else (low / 2 if low > 0 else -0.5)
    above = high + 1 if integer else high * 2
    return below, above


def keyword_cases(scratch: str) -> list[Bad]:
    """Return bad keyword values (install(), the middleware, settings.LOOPHOUND) per key.

    ``scratch`` is an existing directory the path cases may use.
    """
    cases: list[Bad] = []
    for key in _VALIDATORS:
        base = expected(key, WRONG_TYPE)
        if base is None:
            raise AssertionError(f"{key} accepts a value of no known type")
        cases.append(_bad(key, WRONG_TYPE))
        values: list[object]
        match = _RANGE.match(base)
        if base.startswith("true or false"):
            values = [2, "maybe"]
        elif match is not None:
            integer = match.group(1) == "integer"
            below, above = _numbers(float(match.group(2)), float(match.group(3)), integer)
            values = [below, above, float("nan"), "fast"]
            if integer:
                values = [int(below), int(above), 1.5, True, "many"]
        elif base.startswith("one of "):
            values = [BOGUS, 3]
        elif base.startswith("a list of strings"):
            # The list's items: unknown names where the names are a fixed set or rules
            # (refused), any text where they are free (only empty text is refused).
            values = [[BOGUS], [""], 7]
            if expected(key, [BOGUS]) is None:
                values = [[""], [" "], 7]
        elif base == "a file path":
            values = [
                scratch,  # a directory
                os.path.join(scratch, "missing", "events.jsonl"),
                "",
                5,
            ]
        elif base.startswith(("a callable", "an OpenTelemetry provider")):
            values = [3, BOGUS]
        else:
            raise AssertionError(
                f"bad_values.py does not know the validator of {key!r} ({base!r}): teach it"
            )
        cases.extend(_bad(key, value) for value in values)
    return cases


def environment_cases(scratch: str) -> list[Bad]:
    """Return bad ``LOOPHOUND_*`` texts per key; ``Bad.key`` is the variable's name.

    Keys set only from code have no variable (it is an unknown setting, see
    ``code_only_variables``); list-of-names keys take any text.
    """
    cases: list[Bad] = []
    for bad in keyword_cases(scratch):
        if bad.key in _CODE_ONLY:
            continue
        value = bad.value
        if isinstance(value, list):
            text = ",".join(value)
        elif isinstance(value, float) and math.isnan(value):
            text = "nan"
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value)
        else:
            continue
        variable = ENV_PREFIX + bad.key.upper()
        if expected(bad.key, text, variable) is None:
            continue  # free text, or a value only the keyword form refuses ("a,b" names)
        refused = _bad(bad.key, text, variable)
        cases.append(Bad(variable, text, refused.shown, refused.choices))
    return list({(c.key, c.value): c for c in cases}.values())


def code_only_variables() -> list[str]:
    """Return the ``LOOPHOUND_*`` names of settings that can only be given in code."""
    return [ENV_PREFIX + key.upper() for key in sorted(_CODE_ONLY)]
