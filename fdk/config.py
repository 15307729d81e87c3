"""Frozen-dataclass configs: help text per field, `key=value` overrides, plain-dict round trips.

Configs are stored in checkpoints and logs as plain dicts (safe for weights_only loading).
"""

import dataclasses
import types
import typing

from fdk.utils import FdkError


def option(default, help: str):
    """A dataclass field with its --help text (units and paper names belong in the text)."""
    return dataclasses.field(default=default, metadata={"help": help})


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise FdkError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(hints[k], v) for k, v in values.items()})


def _coerce(hint, value):
    if isinstance(value, list) and _base_type(hint) is tuple:
        return tuple(value)
    return value


def _base_type(hint):
    """The concrete type of a hint: `int | None` -> int, `tuple[int, ...]` -> tuple."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return typing.get_origin(hint) or hint


def _optional(hint) -> bool:
    return (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union) and type(
        None
    ) in typing.get_args(hint)


def parse_value(cls, name: str, text: str):
    """Parse `text` as the type of field `name` of config class `cls`."""
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise FdkError(f"{cls.__name__} has no field {name!r}; known: {', '.join(sorted(hints))}")
    hint = hints[name]
    if _optional(hint) and text.lower() in ("none", "null", ""):
        return None
    base = _base_type(hint)
    try:
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if base is tuple:
            return tuple(float(v) for v in text.split(","))
        return base(text)
    except ValueError as error:
        raise FdkError(f"{name}={text!r}: not a valid {getattr(base, '__name__', base)} ({error})") from None


def override(cfg, assignments: list[str]):
    """Apply ['kd_steps=100', 'lr=0.1', ...] to a frozen config with dataclasses.replace."""
    changes = {}
    for item in assignments or []:
        if "=" not in item:
            raise FdkError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        changes[key.strip()] = parse_value(type(cfg), key.strip(), text.strip())
    return dataclasses.replace(cfg, **changes)


def describe(cls) -> str:
    """One line per field: name (type, default): help. Used in --help epilogs."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        type_name = getattr(_base_type(hints[f.name]), "__name__", str(hints[f.name]))
        lines.append(f"  {f.name} ({type_name}, default {f.default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
