"""Settings as typed dataclasses: the dataclass is the schema, a YAML mapping is checked against it once.

`from_mapping(Cls, data)` builds a `Cls` from plain data (YAML, flags), refusing what does not fit
with one line that names the key and what to write instead: unknown keys (with the nearest known
key), wrong types (a quoted "false" is not a bool, "ten" is not an int), values outside the range a
field declares with `setting(..., lo, hi)`, and values outside a `Literal[...]`. Nested dataclasses are
checked recursively, so `tracking.detect_every` is reported by its full dotted name.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")     # still images every room reads (folders, photos, datasets)


class UserError(Exception):
    """A problem the user can fix (bad setting, path, media, weights, data): printed as one line."""


class SettingsError(UserError, ValueError):
    """A setting that does not fit its schema."""


class WeightsError(UserError, ValueError):
    """Weights that cannot be used; the message names the file and what to do."""


def setting(default=dataclasses.MISSING, lo=None, hi=None, *, help: str = "", factory=None):
    """A settings field: its default (`factory` makes lists and sections), the range [lo, hi] its value
    must lie in (either end open: None) and its help text, from which the flag's --help and the
    comment in configs/pipeline.yaml are generated."""
    meta = {"help": help, **({"range": (lo, hi)} if lo is not None or hi is not None else {})}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_default(f: dataclasses.Field):
    """A dataclass field's default value (made by its factory for lists and sections)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def nearest(key: str, known) -> str:
    """' (did you mean X?)' for a typo, or the list of known keys."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(known))}"


def deep_merge(base: dict, top: Mapping) -> dict:
    """`top` layered over `base`: nested mappings merge key by key, everything else replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, or one line saying what is wrong with it."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file {path} not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise SettingsError(f"config file {path} is not text (binary?); pass a YAML file like configs/pipeline.yaml") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix or remove it") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def dotted(overrides: dict) -> dict:
    """{'gradio.port': 1} -> {'gradio': {'port': 1}}; None values (flags not given) are left out."""
    out: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def from_mapping(cls, data: Any, where: str = ""):
    """An instance of dataclass `cls` from `data`, every value checked against its annotation."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where or 'settings'} must be a mapping of keys to values, not {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            home = [n for n, h in hints.items() if dataclasses.is_dataclass(h)
                    and key in {f.name for f in dataclasses.fields(h)}]
            hint = f"; it belongs under {_join(where, home[0])!r}" if home else nearest(key, fields)
            raise SettingsError(f"unknown setting {_join(where, key)!r}{hint}")
        kwargs[key] = _convert(value, hints[key], _join(where, key), fields[key].metadata)
    return cls(**kwargs)


def check_value(cls, dotted_key: str, value, name: str):
    """`value` checked against the field `dotted_key` of dataclass `cls` (e.g. 'gradio.port'), its
    errors naming it `name` (e.g. the flag '--port'): the value, converted."""
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    f = {f.name: f for f in dataclasses.fields(cls)}[leaf]
    return _convert(value, typing.get_type_hints(cls)[leaf], name, f.metadata)


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _kind(value) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _convert(value, hint, name: str, meta: Mapping):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(value, a, name, meta)
            except SettingsError as e:
                errors.append(str(e))
        raise SettingsError(errors[0] if len(inner) == 1 else f"{name} {value!r} fits none of its types ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{name} {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, name)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{name} must be a list, not {_kind(value)}")
        item = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise SettingsError(f"{name} must be a list of {len(args)} values, not {len(value)}")
            return tuple(_convert(v, a, f"{name}[{i}]", meta) for i, (v, a) in enumerate(zip(value, args)))
        return origin(_convert(v, item, f"{name}[{i}]", meta) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"{name} must be a mapping, not {_kind(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be true or false (unquoted), not {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name} must be a whole number, not {_kind(value)}")
        return _in_range(value, name, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, not {_kind(value)}")
        return _in_range(float(value), name, meta)
    if hint is str:
        if isinstance(value, int) and not isinstance(value, bool):   # `source: 0` in YAML is a camera index
            return str(value)
        if not isinstance(value, str):
            raise SettingsError(f"{name} must be text, not {_kind(value)}")
        return value
    if hint is Any or hint is object:
        return value
    raise TypeError(f"schema for {name}: unsupported annotation {hint!r}")   # a programming error, not the user's


def _in_range(value, name: str, meta: Mapping):
    lo, hi = meta.get("range", (None, None))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"between {lo} and {hi}" if lo is not None and hi is not None else \
            (f"at least {lo}" if lo is not None else f"at most {hi}")
        raise SettingsError(f"{name} {value!r} is out of range: it must be {span}")
    return value
