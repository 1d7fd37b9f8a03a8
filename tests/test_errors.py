"""One error tree under DistilkitError: config, source, model and Hub errors are raised where they arise, a
foreign error (timm's, torch's, the Hub client's) is wrapped into ours, and each reaches a CLI user as one
line."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from distilkit.cli import cli, distill  # noqa: F401  (register)
from distilkit.config import DistillConfig, resolve_distill_config
from distilkit.data.pixel_space import PixelSpace
from distilkit.data.sources import SourceConfig, load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import ConfigError, DistilkitError, HubError, ModelError, SourceError
from distilkit.models import UnknownModelError, create_model


def test_the_tree():
    for error in (ConfigError, SourceError, ModelError, HubError):
        assert issubclass(error, DistilkitError)
    assert issubclass(UnknownModelError, ModelError)
    # bad values stay ValueErrors for code that guarded calls with ``except ValueError``
    assert issubclass(ConfigError, ValueError) and issubclass(ModelError, ValueError)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key\\(s\\) in flags: speed"):
        resolve_distill_config(speed=3)
    with pytest.raises(ConfigError, match="--ipc must be at least 1"):
        DistillConfig(ipc=0).check()
    with pytest.raises(ConfigError, match="unknown preset"):
        DistillConfig(preset="fast").check()
    with pytest.raises(ConfigError, match="unknown option\\(s\\) for method 'dm'"):
        from distilkit.methods import get_method

        get_method("dm").resolve("smoke", 1, {"speed": 3})
    with pytest.raises(ConfigError, match="one label per image"):
        DistilledSet(images=torch.zeros(3, 1, 4, 4), labels=torch.zeros(2), class_names=["a"],
                     pixel_space=PixelSpace("raw", [0.0], [1.0]), method="m", ipc=1)


def test_source_errors(tmp_path, embedded_real):
    with pytest.raises(SourceError, match="does not exist"):
        load_real(SourceConfig(source=str(tmp_path / "no" / "such")))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot load source"):
        load_real(SourceConfig(source=str(tmp_path / "broken.parquet")))
    with pytest.raises(ConfigError, match="exceeds the smallest class"):
        embedded_real.require_per_class(10_000, "--ipc")


def test_model_errors_wrap_foreign_ones(monkeypatch):
    with pytest.raises(UnknownModelError):
        create_model("convnet-x", 1, 10, (28, 28))
    with pytest.raises(UnknownModelError, match="unknown timm model"):
        create_model("timm/no_such_net", 3, 10, (32, 32))
    with pytest.raises(ModelError, match="cannot build model 'convnet-d9' for 1x28x28 images.*too small") as err:
        create_model("convnet-d9", 1, 10, (28, 28))
    assert isinstance(err.value.__cause__, ValueError)  # the ConvNet's own error, kept as the cause
    import timm

    def refuse(*args, **kwargs):
        raise RuntimeError("in_chans=5 is not supported\nsecond line")

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(ModelError, match="cannot build model 'timm/resnet18'.*in_chans=5 is not supported$") as err:
        create_model("timm/resnet18", 5, 10, (32, 32))
    assert isinstance(err.value.__cause__, RuntimeError)


def test_hub_errors():
    from distilkit.hub.experts import fetch_experts
    from distilkit.hub.repo import hub_call, parse_set_ref

    with pytest.raises(ConfigError, match="not a dataset repo URI"):
        parse_set_ref("hf://models/x")
    with pytest.raises(ConfigError, match="expected hf://<owner>/<name>"):
        fetch_experts("hf://just-a-name")
    with pytest.raises(HubError, match="offline mode is on"):  # the tests run with HF_HUB_OFFLINE=1
        fetch_experts("hf://someone/experts")
    with pytest.raises(ConfigError, match="bad \\*\\*\\*") as err:  # our errors keep their class; no token
        with hub_call("read", "x/y", "hf_secret"):
            raise ConfigError("bad hf_secret")
    assert "hf_secret" not in str(err.value)
    with pytest.raises(HubError, match="cannot read x/y: OSError: disk"):
        with hub_call("read", "x/y", None):
            raise OSError("disk")


def test_option_values_checked_late_are_config_errors():
    from distilkit.audit._real_runs import parse_iterations
    from distilkit.data.dsa import DSA

    with pytest.raises(ConfigError, match="unknown DSA strategy 'foo'"):
        DSA("foo")
    with pytest.raises(ConfigError, match="expected 'start:stop\\[:step\\]', got 'abc'"):
        parse_iterations("abc")


@pytest.mark.parametrize("arg, needles", [
    ("model=convnet-d9", ["cannot build model 'convnet-d9'", "too small for depth 9"]),
    ("dsa_strategy=foo", ["unknown DSA strategy 'foo'"]),
])
def test_a_value_refused_during_the_run_is_one_line(arg, needles, tmp_path):
    result = CliRunner().invoke(cli, ["distill", "--preset", "smoke", "--ipc", "1", "--out", str(tmp_path / "o"),
                                      "--arg", arg])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # beside progress bars
    assert result.exit_code == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert all(needle in errors[0] for needle in needles)
    assert not (tmp_path / "o").exists()
