"""One validated ``Config``: keyword arguments first, then ``LOOPHOUND_*`` variables.

Every value is checked before anything is installed; a bad one raises
``ConfigurationError`` naming the key, the bad value and what would be accepted.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from loophound.exceptions import ConfigurationError

if TYPE_CHECKING:
    from loophound._events import Event

__all__ = ["DETECTORS", "SINKS", "Config", "resolve_config", "validate_allow"]

ENV_PREFIX = "LOOPHOUND_"
DETECTORS = ("audit", "patches", "watchdog", "callbacks")
SINKS = ("warnings", "logging", "jsonl", "otel")
MODES = ("report", "raise")
IMPORT_MODES = ("quiet", "incident", "ignore")
ALLOW_KINDS = ("operation", "module", "function", "path")
#: Django's SynchronousOnlyOperation: raise it (Django's own behaviour), or report the
#: call as an incident and let the request go on (only with DEBUG on, unless forced).
ASYNC_UNSAFE_MODES = ("raise", "report", "force-report")


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of the guard, validated. See the README's configuration table."""

    enabled: bool = True
    threshold: float = 0.1
    mode: Literal["report", "raise"] = "report"
    sinks: tuple[str, ...] = ("warnings", "logging")
    jsonl: str | None = None
    on_event: Callable[[Event], object] | None = None
    detectors: tuple[str, ...] = DETECTORS
    allow: tuple[str, ...] = ()
    imports: Literal["quiet", "incident", "ignore"] = "quiet"
    max_frames: int = 64
    rate_limit: int = 60
    rate_window: float = 60.0
    queue_size: int = 10_000
    stack_sample_rate: float = 1.0
    code_roots: tuple[str, ...] = ()
    include_modules: tuple[str, ...] = ()
    exclude_modules: tuple[str, ...] = ()
    flush_timeout: float = 2.0
    async_unsafe: Literal["raise", "report", "force-report"] = "raise"
    #: OpenTelemetry providers for the ``otel`` sink; ``None``: the global ones.
    tracer_provider: object | None = None
    meter_provider: object | None = None

    def output_sinks(self) -> tuple[str, ...]:
        """Return the built-in sinks in use: ``jsonl`` joins when a path is given."""
        sinks = list(self.sinks)
        if self.jsonl is not None and "jsonl" not in sinks:
            sinks.append("jsonl")
        has_provider = self.tracer_provider is not None or self.meter_provider is not None
        if has_provider and "otel" not in sinks:
            sinks.append("otel")
        return tuple(sinks)


def _describe(key: str, source: str) -> str:
    return key if source == "argument" else f"{key} (from {source})"


def _fail(key: str, source: str, value: object, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"loophound: invalid value for {_describe(key, source)}: {value!r}; expected {expected}."
    )


def _as_bool(key: str, source: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    raise _fail(key, source, value, "true or false (1/0, yes/no, on/off)")


def _as_number(
    key: str, source: str, value: object, low: float, high: float, *, integer: bool = False
) -> float:
    if integer:  # no exponent: "from 1 to 10000000", not "to 1e+07"
        expected = f"an integer from {int(low)} to {int(high)}"
    else:
        expected = f"a number from {low:g} to {high:g}"
    if isinstance(value, bool):
        raise _fail(key, source, value, expected)
    number: float
    if isinstance(value, str):
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise _fail(key, source, value, expected) from None
    elif isinstance(value, int) or (isinstance(value, float) and not integer):
        number = value
    else:
        raise _fail(key, source, value, expected)
    if math.isnan(number) or not low <= number <= high:
        raise _fail(key, source, value, expected)
    return number


def _as_choice(key: str, source: str, value: object, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip() in choices:
        return value.strip()
    raise _fail(key, source, value, "one of " + ", ".join(choices))


def _as_names(key: str, source: str, value: object) -> tuple[str, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        raise _fail(key, source, value, "a list of strings (or a comma-separated string)")
    names = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _fail(key, source, value, "a list of non-empty strings")
        names.append(item.strip())
    return tuple(dict.fromkeys(names))


def _as_subset(key: str, source: str, value: object, choices: tuple[str, ...]) -> tuple[str, ...]:
    names = _as_names(key, source, value)
    for name in names:
        if name not in choices:
            raise _fail(key, source, name, "a list drawn from " + ", ".join(choices))
    return names


def _as_allow(key: str, source: str, value: object) -> tuple[str, ...]:
    rules = _as_names(key, source, value)
    for rule in rules:
        kind, sep, target = rule.partition(":")
        if not sep or kind not in ALLOW_KINDS or not target:
            raise _fail(
                key,
                source,
                rule,
                "rules of the form KIND:VALUE with KIND one of "
                + ", ".join(ALLOW_KINDS)
                + " (e.g. 'operation:time.sleep', 'module:myapp.legacy',"
                " 'function:myapp.views.export', 'path:/srv/app/legacy/')",
            )
    return rules


def validate_allow(value: object, source: str = "argument") -> tuple[str, ...]:
    """Return allow rules, or raise ``ConfigurationError`` naming the bad one."""
    return _as_allow("allow", source, value)


def _as_path(key: str, source: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, source, value, "a file path")
    if "\0" in value:
        raise _fail(key, source, value, "a file path without NUL bytes")
    directory = os.path.dirname(os.path.abspath(value)) or "."
    if not os.path.isdir(directory):
        raise _fail(key, source, value, f"a path in an existing directory ({directory} is not)")
    if os.path.isdir(value):
        raise _fail(key, source, value, "a file path, not a directory")
    if os.path.exists(value) and stat.S_ISFIFO(os.stat(value).st_mode):
        # Opening a FIFO nobody reads blocks for ever (and the middleware installs on
        # the event loop). /dev/stdout and other devices are fine.
        raise _fail(key, source, value, "a file or a device, not a FIFO")
    if os.path.exists(value) and not os.access(value, os.W_OK):
        raise _fail(key, source, value, "a file loophound may append to (it is not writable)")
    return value


def _as_provider(method: str) -> Callable[[str, str, object], object]:
    def validate(key: str, source: str, value: object) -> object:
        if value is None or callable(getattr(value, method, None)):
            return value
        raise _fail(
            key, source, value, f"an OpenTelemetry provider (an object with {method}()), or None"
        )

    return validate


def _as_callback(key: str, source: str, value: object) -> object:
    if value is None or callable(value):
        return value
    raise _fail(key, source, value, "a callable taking one loophound.Event, or None")


_Validator = Callable[[str, str, object], object]

_VALIDATORS: dict[str, _Validator] = {
    "enabled": _as_bool,
    "threshold": lambda k, s, v: _as_number(k, s, v, 0.001, 3600.0),
    "mode": lambda k, s, v: _as_choice(k, s, v, MODES),
    "sinks": lambda k, s, v: _as_subset(k, s, v, SINKS),
    "jsonl": _as_path,
    "on_event": _as_callback,
    "detectors": lambda k, s, v: _as_subset(k, s, v, DETECTORS),
    "allow": _as_allow,
    "imports": lambda k, s, v: _as_choice(k, s, v, IMPORT_MODES),
    "max_frames": lambda k, s, v: int(_as_number(k, s, v, 1, 1000, integer=True)),
    "rate_limit": lambda k, s, v: int(_as_number(k, s, v, 1, 10_000_000, integer=True)),
    "rate_window": lambda k, s, v: _as_number(k, s, v, 0.001, 86_400.0),
    "queue_size": lambda k, s, v: int(_as_number(k, s, v, 1, 10_000_000, integer=True)),
    "stack_sample_rate": lambda k, s, v: _as_number(k, s, v, 0.0, 1.0),
    "code_roots": _as_names,
    "include_modules": _as_names,
    "exclude_modules": _as_names,
    "flush_timeout": lambda k, s, v: _as_number(k, s, v, 0.0, 60.0),
    "async_unsafe": lambda k, s, v: _as_choice(k, s, v, ASYNC_UNSAFE_MODES),
    "tracer_provider": _as_provider("get_tracer"),
    "meter_provider": _as_provider("get_meter"),
}
# Settings that only make sense from code, never from an environment variable.
_CODE_ONLY = frozenset({"on_event", "tracer_provider", "meter_provider"})


def _unknown(key: str, source: str, valid: Iterable[str]) -> ConfigurationError:
    return ConfigurationError(
        f"loophound: unknown setting {_describe(key, source)}; valid settings are "
        + ", ".join(sorted(valid))
        + "."
    )


def _check_names() -> None:
    names = {f.name for f in fields(Config)}
    if names != set(_VALIDATORS):  # pragma: no cover - a developer error caught by any test
        raise AssertionError(f"validators out of step with Config: {names ^ set(_VALIDATORS)}")


_check_names()


def _from_env(environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    found: dict[str, tuple[object, str]] = {}
    valid_env = {ENV_PREFIX + name.upper() for name in _VALIDATORS if name not in _CODE_ONLY}
    for env_key, raw in environ.items():
        if not env_key.startswith(ENV_PREFIX):
            continue
        if env_key not in valid_env:
            raise _unknown(env_key, "environment", valid_env)
        found[env_key[len(ENV_PREFIX) :].lower()] = (raw, env_key)
    return found


def resolve_config(
    kwargs: Mapping[str, Any],
    *,
    settings: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge keyword arguments, then ``settings`` (a mapping), then ``LOOPHOUND_*``.

    Raises ``ConfigurationError`` for an unknown key or a bad value from any source.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [("argument", kwargs)]
    if settings is not None:
        if not isinstance(settings, Mapping):
            raise _fail("LOOPHOUND", "settings", settings, "a dict of loophound settings")
        layers.append(("settings.LOOPHOUND", settings))
    env = _from_env(os.environ if environ is None else environ)

    chosen: dict[str, object] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in _VALIDATORS:
                raise _unknown(key, source, _VALIDATORS)
            if key not in chosen:
                chosen[key] = _VALIDATORS[key](key, source, value)
    for key, (raw, env_key) in env.items():
        value = _VALIDATORS[key](key, env_key, raw)
        chosen.setdefault(key, value)

    config = replace(Config(), **cast("dict[str, Any]", chosen))
    if "jsonl" in config.sinks and config.jsonl is None:
        raise ConfigurationError(
            "loophound: invalid value for sinks: 'jsonl' needs a file; set jsonl='events.jsonl'"
            " (or LOOPHOUND_JSONL) as well."
        )
    return config
