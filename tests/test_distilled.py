from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import yaml

from distilkit.card import read_card, replace_section
from distilkit.data.pixel_space import PixelSpace
from distilkit.data.zca import ZCA
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError

SOURCE = {"id": "embedded:fashion_mnist", "hub_id": "zalando-datasets/fashion_mnist", "license": "mit",
          "split": "train", "test": {"split": "test", "carved": False}}


def make_set(soft: bool = False, zca: bool = False, n_per_class: int = 2) -> DistilledSet:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3 * n_per_class, 1, 6, 6, generator=gen) * 3  # values far outside [0, 1]
    labels = torch.arange(3).repeat_interleave(n_per_class)
    space = PixelSpace("normalized", [0.3], [0.4])
    if zca:
        space = PixelSpace("zca", [0.3], [0.4], ZCA.fit(torch.randn(50, 1, 6, 6, generator=gen)))
    return DistilledSet(images=images, labels=labels, class_names=["a", "b", "c"], pixel_space=space,
                        method="dm", ipc=n_per_class,
                        soft_labels=torch.softmax(torch.randn(3 * n_per_class, 3, generator=gen), 1) if soft else None,
                        learned_lr=0.0123 if soft else None, config={"method": "dm", "seed": 0}, source=SOURCE,
                        provenance={"distilkit_version": "test", "seed": 0},
                        history={"iteration": [0, 1], "loss": [2.0, 1.0]})


@pytest.mark.parametrize("soft,zca", [(False, False), (True, True)])
def test_round_trip_is_bit_exact(tmp_path, soft, zca):
    dset = make_set(soft=soft, zca=zca)
    dset.save(tmp_path / "s")
    back = DistilledSet.load(tmp_path / "s")
    assert torch.equal(back.images, dset.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, dset.labels)
    assert back.class_names == ["a", "b", "c"]
    assert back.learned_lr == dset.learned_lr
    assert back.history == dset.history
    if soft:
        assert torch.equal(back.soft_labels, dset.soft_labels)
    if zca:
        assert torch.equal(back.pixel_space.zca.matrix, dset.pixel_space.zca.matrix)
    assert (tmp_path / "s" / "preview.png").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_plain_load_dataset_without_distilkit(tmp_path):
    dset = make_set(soft=True)
    dset.save(tmp_path / "s")
    code = (
        "import sys, torch\n"
        "from datasets import load_dataset\n"
        f"ds = load_dataset({str(tmp_path / 's')!r}, split='train').with_format('torch')\n"
        "assert 'distilkit' not in sys.modules\n"
        "x = ds[:]['image']; print(x.dtype, tuple(x.shape), ds.features['label'].names)\n"
        f"torch.testing.assert_close(ds[:]['soft_label'].sum(1), torch.ones(6))\n"
        f"import numpy as np; np.save({str(tmp_path / 'x.npy')!r}, x.numpy())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch.float32 (6, 1, 6, 6) ['a', 'b', 'c']" in out.stdout
    import numpy as np

    assert torch.equal(torch.from_numpy(np.load(tmp_path / "x.npy")), dset.images)


def test_card_yaml_keys_and_sections(tmp_path):
    make_set().save(tmp_path / "s")
    card = read_card(tmp_path / "s")
    data = card.data.to_dict()
    assert data["license"] == "mit"
    assert data["task_categories"] == ["image-classification"]
    assert data["size_categories"] == ["n<1K"]
    assert data["source_datasets"] == ["zalando-datasets/fashion_mnist"]
    assert {"dataset-distillation", "synthetic", "distilkit"} <= set(data["tags"])
    meta = data["distilkit"]
    assert meta["method"] == "dm" and meta["ipc"] == 2
    assert meta["image"] == {"shape": [1, 6, 6], "dtype": "float32", "column": "image"}
    assert meta["pixel_space"]["space"] == "normalized"
    assert meta["source"]["id"] == "embedded:fashion_mnist"
    assert card.text.count("<!-- distilkit:eval:start -->") == 1
    assert "![preview](preview.png)" in card.text


def test_card_snippet_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_set().save("distilled/toy")
    text = (tmp_path / "distilled" / "toy" / "README.md").read_text()
    snippet = re.search(r"## How to use\n\n```python\n(.*?)```", text, re.DOTALL).group(1)
    assert 'load_dataset("distilled/toy"' in snippet
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final training loss" in out.stdout


def test_replace_section_is_idempotent_and_local():
    text = "intro\n<!-- distilkit:eval:start -->\nold\n<!-- distilkit:eval:end -->\noutro\n"
    once = replace_section(text, "eval", "new")
    assert once == replace_section(once, "eval", "new")
    assert once.startswith("intro\n") and once.endswith("outro\n") and "old" not in once
    added = replace_section("no markers\n", "audit", "x")
    assert added.count("<!-- distilkit:audit:start -->") == 1


def test_existing_output_needs_overwrite(tmp_path):
    dset = make_set()
    dset.save(tmp_path / "s")
    with pytest.raises(DistilkitError, match="--overwrite"):
        dset.save(tmp_path / "s")
    dset.images += 1
    dset.save(tmp_path / "s", overwrite=True)
    assert torch.equal(DistilledSet.load(tmp_path / "s").images, dset.images)


def test_corrupt_and_foreign_folders(tmp_path):
    make_set().save(tmp_path / "s")
    readme = tmp_path / "s" / "README.md"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "README.md").write_text("---\nlicense: mit\n---\nhello\n")
    with pytest.raises(DistilkitError, match="not a distilkit set"):
        DistilledSet.load(tmp_path / "foreign")
    with pytest.raises(DistilkitError, match="not a folder"):
        DistilledSet.load(tmp_path / "missing")
    readme.write_text("---\ndistilkit: [unclosed\n---\n")
    with pytest.raises(DistilkitError, match="corrupt"):
        DistilledSet.load(tmp_path / "s")
    make_set().save(tmp_path / "t")
    (tmp_path / "t" / "data" / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DistilkitError, match="cannot read"):
        DistilledSet.load(tmp_path / "t")
    meta = yaml.safe_load((tmp_path / "t" / "README.md").read_text().split("---")[1])
    assert meta["distilkit"]["method"] == "dm"
