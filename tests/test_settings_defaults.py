"""One source for every default: configs/pipeline.yaml lists every setting with the value its typed
field holds, so the file documents the defaults and cannot drift from them."""
import dataclasses
import typing

from models.schema import read_yaml
from stream.settings import DEFAULTS, TrackSettings


def _defaults(cls) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = _defaults(hints[f.name])
        else:
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_the_shipped_yaml_holds_exactly_the_field_defaults():
    fields = _flat(_defaults(TrackSettings))
    yaml = _flat(read_yaml(DEFAULTS))
    assert set(yaml) == set(fields), (sorted(set(fields) - set(yaml)), sorted(set(yaml) - set(fields)))
    differ = {k: (yaml[k], fields[k]) for k in fields
              if yaml[k] != fields[k] and not (isinstance(fields[k], tuple) and list(fields[k]) == yaml[k])}
    assert not differ, differ
