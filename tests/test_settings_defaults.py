"""One source for every default: the typed fields. configs/pipeline.yaml and the flags of `hihtrack
track` are generated from them, so neither can drift."""
import dataclasses
import typing

import pytest

from hihtrack.cli import build_parser, main, track_flags
from models.schema import SettingsError, read_yaml
from stream.settings import SHIPPED_YAML, TrackSettings, defaults_yaml, load_settings


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")


def test_the_shipped_yaml_is_the_generated_one():
    assert SHIPPED_YAML.read_text() == defaults_yaml(), "regenerate it: hihtrack config > configs/pipeline.yaml"


def test_the_shipped_yaml_loads_to_exactly_the_defaults():
    assert load_settings(SHIPPED_YAML) == TrackSettings()
    assert load_settings(read_yaml(SHIPPED_YAML)) == load_settings()


def test_every_setting_has_its_help():
    missing = [name for name, f in _fields(TrackSettings) if not f.metadata.get("help")]
    assert not missing, missing


def test_every_top_level_setting_is_a_flag_with_the_fields_help_and_default():
    flags = track_flags()
    top = [f.name for f in dataclasses.fields(TrackSettings)
           if not dataclasses.is_dataclass(typing.get_type_hints(TrackSettings)[f.name])]
    assert set(top) <= set(flags) and {"host", "port", "share"} <= set(flags)
    track = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith("track"))
    helps = {a.dest: a.help for a in track._actions}
    for dest, (_, f, _) in flags.items():
        assert f.metadata["help"] in helps[dest] and "default:" in helps[dest], dest


@pytest.mark.parametrize("argv,words", [
    (["--crop-views", "3"], ["--crop-views", "3", "0, 1, 2, 4"]),
    (["--port", "0"], ["--port"]),
    (["--threads", "x"], ["--threads", "whole number"]),
    (["--detector-min-score", "2"], ["--detector-min-score"]),
])
def test_a_bad_flag_is_named_by_the_flag(argv, words, capsys):
    try:
        rc = main(["track", "--ui", "none", *argv])
    except SystemExit as e:         # argparse's own check (a flag's type)
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_config_prints_the_shipped_yaml(capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr().out == SHIPPED_YAML.read_text()


def test_a_config_file_overrides_only_its_keys(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("tracking:\n  detect_every: 5\nsmoothing: kalman\n")
    s = load_settings(cfg, **{"gradio.port": 9000})
    assert (s.tracking.detect_every, s.smoothing, s.gradio.port) == (5, "kalman", 9000)
    assert s.tracking.max_faces == TrackSettings().tracking.max_faces
    cfg.write_text("tracking:\n  detect_evry: 5\n")
    with pytest.raises(SettingsError, match="mine.yaml.*detect_every"):
        load_settings(cfg)


def test_the_readme_flags_table_is_the_generated_one():
    from hihtrack.cli import flags_markdown
    from stream.settings import ROOT
    assert flags_markdown() in (ROOT / "README.md").read_text(), "paste flags_markdown() into the README's flags table"
