"""One preset vocabulary: every method, audit, expert and evaluation table speaks it, every command accepts
every preset (an entry without an override runs the defaults), and a misspelt preset key fails at
registration."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from distilkit.audit import get_audit, list_audits, register_audit
from distilkit.audit._registry import TRAINING_DEFAULTS
from distilkit.cli import audit, bench, cli, compare, distill, evaluate, experts, methods  # noqa: F401  (register)
from distilkit.errors import ConfigError
from distilkit.experts import EXPERT_PRESETS, ExpertConfig, expert_preset
from distilkit.methods import get_method, list_methods, register_method
from distilkit.presets import DEFAULT_PRESET, PRESETS, check_preset, check_preset_keys
from distilkit.train import TRAIN_PRESETS, train_preset


def test_the_vocabulary():
    assert PRESETS == ("standard", "paper", "cpu", "smoke") and DEFAULT_PRESET in PRESETS
    assert check_preset("paper") == "paper"
    with pytest.raises(ConfigError, match="unknown preset 'fast'; choose from standard, paper, cpu, smoke"):
        check_preset("fast")
    check_preset_keys(["cpu", "smoke"], "t")
    with pytest.raises(ConfigError, match="t: preset\\(s\\) 'tiny' are not in the preset vocabulary"):
        check_preset_keys(["cpu", "tiny"], "t")


@pytest.mark.parametrize("name", list_methods())
def test_every_method_resolves_every_preset(name):
    spec = get_method(name)
    assert set(spec.presets) <= set(PRESETS)
    resolved = {preset: spec.resolve(preset, 10) for preset in PRESETS}
    bare = [preset for preset in PRESETS if preset not in spec.presets]  # no entry: the method's defaults
    assert all(resolved[preset] == resolved[bare[0]] for preset in bare)


@pytest.mark.parametrize("name", list_audits())
def test_every_audit_resolves_every_preset(name):
    spec = get_audit(name)
    assert set(spec.presets) <= set(PRESETS)
    for preset in PRESETS:
        assert spec.resolve(preset) == {**spec.defaults, **spec.presets.get(preset, {})}
    assert set(TRAINING_DEFAULTS) == set(PRESETS)


def test_expert_and_evaluation_tables_cover_the_vocabulary():
    assert set(EXPERT_PRESETS) <= set(PRESETS) and set(TRAIN_PRESETS) == set(PRESETS)
    for preset in PRESETS:
        assert expert_preset(preset) == EXPERT_PRESETS.get(preset, ExpertConfig())
        assert train_preset(preset) == TRAIN_PRESETS[preset]
    assert expert_preset("paper") == expert_preset("standard") == ExpertConfig()  # MTT's own recipe
    assert expert_preset("paper", num_experts=4, epochs=None).num_experts == 4
    with pytest.raises(ConfigError, match="unknown preset"):
        expert_preset("tiny")
    with pytest.raises(ConfigError, match="unknown preset"):
        train_preset("tiny")


def test_a_preset_key_outside_the_vocabulary_fails_at_registration():
    with pytest.raises(ConfigError, match="method 'misspelt': preset\\(s\\) 'fast'"):
        register_method("misspelt", family="selection", summary="s", defaults={"iterations": 1},
                        presets={"fast": {"iterations": 2}})(lambda *a: None)
    assert "misspelt" not in list_methods()
    with pytest.raises(ConfigError, match="audit 'misspelt': preset\\(s\\) 'Paper'"):
        register_audit("misspelt", question=1, summary="s", defaults={"seeds": 1}, presets={"Paper": {"seeds": 2}})
    assert "misspelt" not in list_audits()


def _error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# Each command with an input that fails only after the preset was parsed and resolved: the error is the
# later one, never about the preset. (Nothing here trains or loads data.)
LATER_FAILURE = {
    "distill": (["distill", "--ipc", "0", "--out", "o"], "--ipc must be at least 1"),
    "evaluate": (["evaluate", "no-such-set"], "no-such-set is not a folder"),
    "audit": (["audit", "no-such-set", "--only", "pixels"], "no-such-set is not a folder"),
    "compare": (["compare", "no-such-a", "no-such-b"], "no-such-a is not a folder"),
    "experts": (["experts", "--num-experts", "0"], "num_experts must be >= 1"),
    "bench": (["bench", "--ipc", "0", "--out", "b"], "--ipc values must be at least 1"),
}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("command", sorted(LATER_FAILURE))
def test_every_command_accepts_every_preset(command, preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, later = LATER_FAILURE[command]
    extra = ["--eval-preset", preset] if command == "bench" else []
    line = _error(CliRunner().invoke(cli, [*args, "--preset", preset, *extra]))
    assert later in line and "preset" not in line


@pytest.mark.parametrize("preset", PRESETS)
def test_methods_shows_every_preset(preset):
    result = CliRunner().invoke(cli, ["methods", "dm", "--preset", preset])
    assert result.exit_code == 0 and f"defaults for --preset {preset}" in result.output


@pytest.mark.parametrize("command", [*sorted(LATER_FAILURE), "methods"])
def test_preset_choices_come_from_the_vocabulary(command, tmp_path):
    assert "[standard|paper|cpu|smoke]" in CliRunner().invoke(cli, [command, "--help"]).output
    line = _error(CliRunner().invoke(cli, [command, *(["x", "y"] if command == "compare" else ["x"] if command in (
        "evaluate", "audit") else []), "--preset", "fast"]))
    assert "unknown preset 'fast'; choose from standard, paper, cpu, smoke" in line


def test_audit_runs_at_the_standard_preset(smoke_set, tmp_path):
    import json
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(smoke_set, folder)
    result = CliRunner().invoke(cli, ["audit", str(folder), "--preset", "standard", "--only", "pixels"])
    assert result.exit_code == 0, result.output
    entry = json.loads((folder / "audit" / "report.json").read_text())["audits"]["pixels"]
    assert entry["preset"] == "standard" and entry["config"] == get_audit("pixels").defaults
