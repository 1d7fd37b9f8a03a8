"""Method defaults follow their reference or say that they do not (issue 20, defect 3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from distilkit.errors import DistilkitError
from distilkit.methods import get_method
from distilkit.methods._registry import DIGIT_DSA_STRATEGY, dataset_families, is_digit_dataset


def fake_real(channels: int, source_id: str) -> SimpleNamespace:
    return SimpleNamespace(image_shape=(channels, 28, 28), info={"id": source_id})


def test_dataset_families():
    assert dataset_families(fake_real(1, "embedded:fashion_mnist")) == ("grayscale",)
    assert dataset_families(fake_real(1, "ylecun/mnist")) == ("grayscale", "digits")
    assert dataset_families(fake_real(3, "ufldl-stanford/svhn")) == ("rgb", "digits")
    assert dataset_families(fake_real(3, "uoft-cs/cifar10")) == ("rgb",)
    assert not is_digit_dataset("/usr/share/datasets/fashion-mnist") and not is_digit_dataset("kmnist")
    assert is_digit_dataset("/data/MNIST") and is_digit_dataset("emnist")


@pytest.mark.parametrize("name", ["dsa", "dm", "mtt"])
def test_dsa_drops_flip_for_digit_datasets(name):
    spec = get_method(name)
    assert "flip" in spec.resolve("standard", 10, families=("grayscale",))["dsa_strategy"]
    digits = spec.resolve("standard", 10, families=("grayscale", "digits"))
    assert digits["dsa_strategy"] == DIGIT_DSA_STRATEGY and "flip" not in digits["dsa_strategy"]
    assert "DSA README" in spec.source_of("dsa_strategy", "standard", 10, ("grayscale", "digits"))
    assert get_method(name).resolve("standard", 10, {"dsa_strategy": "flip"}, ("digits",))["dsa_strategy"] == "flip"


def test_gradient_matching_network_has_no_momentum_like_the_reference():
    for name in ("dc", "dsa"):
        spec = get_method(name)
        assert spec.resolve("standard", 10)["momentum_net"] == 0.0
        assert "main.py" in spec.source_of("momentum_net", "standard", 10)
        assert spec.resolve("cpu", 10)["momentum_net"] == 0.5  # distilkit's cpu choice, and it says so
        assert "own choice" in spec.source_of("momentum_net", "cpu", 10)
    assert "dsa_strategy" not in get_method("dc").resolve("standard", 10, families=("digits",))


def test_krr_kip_kernel_is_renamed_honestly(embedded_real, accelerator):
    from distilkit.methods import RunContext

    spec = get_method("krr")
    cfg = spec.resolve("smoke", 1, {"kernel": "kip"})
    with pytest.raises(DistilkitError, match="random-features.*not KIP's infinite-width"):
        spec.fn(embedded_real, 1, cfg, RunContext(accelerator=accelerator, seed=0))


def test_mtt_pixel_space_and_image_lr_per_family():
    spec = get_method("mtt")
    assert spec.default_pixel_space(("rgb",)) == "zca" and spec.resolve("standard", 10, families=("rgb",))[
        "lr_images"] == 1000.0
    assert spec.default_pixel_space(("grayscale",)) is None
    assert spec.resolve("cpu", 10, families=("grayscale",))["lr_images"] == 100.0
    assert spec.resolve("cpu", 10, families=("rgb",))["lr_images"] == 1000.0
    assert "own choice" in spec.source_of("lr_images", "cpu", 10, ("grayscale",))
    result = CliRunner().invoke(_cli(), ["methods", "mtt", "--verbose", "--family", "rgb"])
    assert result.exit_code == 0 and "pixel space: zca" in result.output and "--lr_img 1000" in result.output
    assert "grayscale: lr_images=100.0" in result.output


def test_distill_takes_the_methods_pixel_space_for_the_data_unless_chosen(tmp_path, accelerator):
    from conftest import write_image_dataset

    from distilkit.config import DistillConfig
    from distilkit.data.sources import SourceConfig
    from distilkit.distilled import DistilledSet
    from distilkit.pipeline import distill

    source = write_image_dataset(tmp_path / "rgb", n_per_class=8, size=8)
    args = {"num_experts": 1, "expert_train_epochs": 2, "syn_steps": 2, "batch_syn": 0, "iterations": 1}
    out = distill(DistillConfig(source=SourceConfig(source=str(source)), method="mtt", ipc=1, preset="smoke",
                                out=str(tmp_path / "zca"), method_args=args), accelerator=accelerator)
    saved = DistilledSet.load(out)
    assert saved.pixel_space.kind == "zca" and saved.config["pixel_space"] == "zca"
    chosen = distill(DistillConfig(source=SourceConfig(source=str(source)), method="mtt", ipc=1, preset="smoke",
                                   pixel_space="normalized", out=str(tmp_path / "norm"), method_args=args),
                     accelerator=accelerator)
    assert DistilledSet.load(chosen).pixel_space.kind == "normalized"
    plain = distill(DistillConfig(source=SourceConfig(source=str(source)), method="random", ipc=1, preset="smoke",
                                  out=str(tmp_path / "random")), accelerator=accelerator)
    assert DistilledSet.load(plain).pixel_space.kind == "normalized"


def _cli():
    from distilkit.cli import cli, methods  # noqa: F401  (methods registers the command)

    return cli


def test_builtin_tables_are_data_beside_their_module():
    """Every built-in method's tables come from the YAML beside its module; the DSA strategy they name
    is the augmentation's own default."""
    from pathlib import Path

    import distilkit.methods as methods
    from distilkit.data.dsa import DEFAULT_STRATEGY

    folder = Path(methods.__file__).parent
    assert {p.stem for p in folder.glob("*.yaml")} == {"_features", "bptt", "cafe", "dm", "gradient_matching",
                                                       "krr", "mtt"}
    for name in ("bptt", "cafe", "dc", "dm", "dsa", "herding", "kcenter", "krr", "mtt"):
        spec = get_method(name)
        assert spec.defaults and spec.citation and spec.sources and set(spec.presets) >= {"cpu", "smoke"}
        if "dsa_strategy" in spec.defaults:
            assert spec.defaults["dsa_strategy"] == DEFAULT_STRATEGY, name


def test_method_tables_reads_floats_and_refuses_unknown_tables(tmp_path):
    from distilkit.errors import ConfigError
    from distilkit.methods._registry import method_tables

    module = tmp_path / "mine.py"
    (tmp_path / "mine.yaml").write_text("defaults: {ridge: 1e-5, steps: 10, lr: .5}\nsources: {ridge: mine}\n")
    assert method_tables(str(module)) == {"defaults": {"ridge": 1e-5, "steps": 10, "lr": 0.5},
                                          "sources": {"ridge": "mine"}}
    (tmp_path / "mine.yaml").write_text("defualts: {steps: 10}\n")
    with pytest.raises(ConfigError, match="unknown table.*defualts"):
        method_tables(str(module))
