"""The small things of the command line: `bench ls` for every plugin kind, `--version`, and a
near miss of a grid key answered with the key meant."""

import re
from importlib import metadata

import pytest
from test_bad_inputs import run_cli

from bench import registry
from bench.cli import main


def test_ls_lists_every_plugin_kind_of_the_registry_remedies_included(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert [line[:-1] for line in out.splitlines() if not line.startswith(" ")] == list(registry.REGISTRIES)
    assert main(["ls", "remedies"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == registry.remedies.names()
    assert {"crt", "focal", "ldam_drw", "resample", "reweight"} <= set(listed)


def test_version_prints_the_installed_distributions_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"bench (medaug-bench) {metadata.version('medaug-bench')}"
    assert re.fullmatch(r"bench \(medaug-bench\) \d+\.\d+\.\d+\S*", out)


@pytest.mark.parametrize(
    "arg, meant",
    [("methds=[fm]", "methods"), ("dataset=[synthetic2d]", "datasets"), ("result_dir=x", "results_dir")],
)
def test_a_near_miss_of_a_grid_key_names_the_key_meant(tmp_path, monkeypatch, capsys, caplog, arg, meant):
    monkeypatch.chdir(tmp_path)
    out = run_cli(["validate", arg], capsys, caplog)
    assert out.code == 2 and len(out.err) == 1, out.err
    assert out.err[0].endswith(f"; did you mean {meant!r}?"), out.err


def test_a_key_near_nothing_gets_no_guess(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    out = run_cli(["validate", "zzzz=1"], capsys, caplog)
    assert out.code == 2 and "did you mean" not in out.err[0], out.err
