"""``distilkit import``: every reference layout, built in a temp folder, round-trips through
DistilledSet.load with "imported" provenance; bad files are one ``error:`` line, exit 2, nothing written;
one imported set goes import -> evaluate -> audit -> publish (fake Hub)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from distilkit.cli import cli, import_  # noqa: F401  (register)
from distilkit.distilled import DistilledSet

IPC = 2


@pytest.fixture(scope="module")
def picked(embedded_real):
    """IPC real images per class (class-major), in the normalised space, as the reference loops save them."""
    real = embedded_real
    idx = torch.cat([torch.nonzero(real.train_labels == c).flatten()[:IPC] for c in range(real.num_classes)])
    return real.batch(idx), real.train_labels[idx], real.pixel_space, real.train_images[idx]


def run(*args: str):
    result = CliRunner().invoke(cli, ["import", *args])
    assert "Traceback" not in result.output, result.output
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(kind: str, folder: Path, images: torch.Tensor, labels: torch.Tensor, raw_uint8: torch.Tensor):
    """Write ``kind`` the way its reference code does; returns (PATH, extra import args, hashed file)."""
    if kind == "study-dict":  # the study's sets / the reference DM loop: torch.save({'data':..., 'label':...})
        path = folder / "dm_ipc2.pt"
        torch.save({"data": images, "label": labels}, path)
        return path, [], path
    if kind == "tuple":
        path = folder / "set.pt"
        torch.save((images, labels), path)
        return path, [], path
    if kind == "dc-res":  # DC/DSA/DM main.py: {'data': [[image_syn, label_syn] per exp], 'accs_all_exps': {...}}
        path = folder / "res_DC_FashionMNIST_ConvNet_2ipc.pt"
        torch.save({"data": [[torch.zeros_like(images), labels], [images.clone(), labels.clone()]],
                    "accs_all_exps": {"ConvNet": [0.41, 0.43]}}, path)
        return path, ["--experiment", "1"], path
    if kind in ("mtt-folder", "mtt-file"):  # MTT distill.py: images_best.pt, labels_best.pt, lr_best.pt
        torch.save(images.clone(), folder / "images_best.pt")
        torch.save(labels.clone(), folder / "labels_best.pt")
        torch.save(torch.tensor(0.0123), folder / "lr_best.pt")
        return (folder if kind == "mtt-folder" else folder / "labels_best.pt"), [], None
    if kind == "npz":
        path = folder / "set.npz"
        np.savez(path, x=images.numpy(), y=labels.numpy())
        return path, [], path
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = folder / "set.safetensors"
        save_file({"images": images.contiguous(), "labels": labels.contiguous(), "lr": torch.tensor([0.05])}, str(path))
        return path, [], path
    if kind == "image-folder":  # decoupled methods: one sub-folder per class + a soft-label tensor file
        from PIL import Image

        root = folder / "images"
        for i, (image, label) in enumerate(zip(raw_uint8, labels.tolist(), strict=True)):
            (root / f"{label:05d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(root / f"{label:05d}" / f"{i:03d}.png")
        soft = torch.softmax(3 * torch.nn.functional.one_hot(labels, 10).float(), dim=1)
        torch.save(soft, folder / "soft_labels.pt")
        return root, ["--labels", str(folder / "soft_labels.pt")], None
    raise AssertionError(kind)


FORMATS = ["study-dict", "tuple", "dc-res", "mtt-folder", "mtt-file", "npz", "safetensors", "image-folder"]


@pytest.mark.parametrize("kind", FORMATS)
def test_each_reference_layout_round_trips(kind, picked, tmp_path):
    images, labels, space, raw_uint8 = picked
    path, extra, hashed = _write(kind, tmp_path, images, labels, raw_uint8)
    space_args = [] if kind == "image-folder" else ["--pixel-space", "normalized"]
    out = tmp_path / "out"
    result = run(str(path), "--source", "embedded", *space_args, *extra, "--out", str(out))
    assert result.exit_code == 0, result.output
    dset = DistilledSet.load(out)
    imported = dset.provenance["imported"]
    assert dset.ipc == IPC and dset.images.shape == images.shape
    assert torch.equal(dset.labels, labels)
    assert dset.class_names == [str(n) for n in dset.class_names] and len(dset.class_names) == 10
    if kind == "image-folder":
        assert dset.pixel_space.kind == "raw" and imported["labels"] == "soft"
        assert torch.equal(dset.images, raw_uint8.float() / 255)
        assert dset.soft_labels.shape == (20, 10)
    else:
        assert dset.pixel_space.kind == "normalized"
        assert dset.pixel_space.mean == pytest.approx(space.mean) and dset.pixel_space.std == pytest.approx(space.std)
        assert torch.equal(dset.images, images)
    if hashed is not None:
        assert imported["sha256"] == sha256(hashed) and imported["file"] == hashed.name
    assert len(imported["sha256"]) == 64
    expected = {"study-dict": "torch-dict", "tuple": "torch-tuple", "dc-res": "dc-res", "mtt-folder": "mtt",
                "mtt-file": "mtt"}.get(kind, kind)
    assert imported["format"] == expected
    if kind.startswith("mtt"):
        assert dset.learned_lr == pytest.approx(0.0123) and dset.method == "mtt"
    if kind == "safetensors":
        assert dset.learned_lr == pytest.approx(0.05)
    if kind == "dc-res":
        assert imported["experiment"] == 1 and dset.method == "dc"
    card = (out / "README.md").read_text()
    assert "Imported with `distilkit import`" in card and imported["sha256"] in card


def test_zca_from_source_and_given_mean_std(picked, embedded_real, tmp_path):
    from distilkit.data.zca import ZCA

    images, labels, _, _ = picked
    torch.save({"data": images, "label": labels}, tmp_path / "s.pt")
    result = run(str(tmp_path / "s.pt"), "--source", "embedded", "--zca-from-source", "--mean", "0.5",
                 "--std", "0.25", "--lr", "0.03", "--method-name", "kip", "--out", str(tmp_path / "z"))
    assert result.exit_code == 0, result.output
    dset = DistilledSet.load(tmp_path / "z")
    assert dset.pixel_space.kind == "zca" and (tmp_path / "z" / "zca.safetensors").is_file()
    assert dset.pixel_space.mean == [0.5] and dset.pixel_space.std == [0.25]
    assert dset.learned_lr == pytest.approx(0.03) and dset.method == "kip"
    norm = (embedded_real.train_images.float() / 255 - 0.5) / 0.25
    expected = ZCA.fit(norm, eps=0.1)
    assert torch.allclose(dset.pixel_space.zca.matrix, expected.matrix, atol=1e-5)


class Pickled:  # any class instance needs code unpickled: weights_only refuses it
    def __init__(self):
        self.data = torch.zeros(2)


def _bad(kind: str, folder: Path, images: torch.Tensor, labels: torch.Tensor) -> tuple[Path, list[str], str]:
    pt = folder / "bad.pt"
    if kind == "pickled-object":
        torch.save({"data": images, "label": labels, "meta": Pickled()}, pt)
        return pt, [], "weights_only"
    if kind == "wrong-shape":
        torch.save({"data": images[:, :, :20], "label": labels}, pt)
        return pt, [], "[N, 1, 28, 28]"
    if kind == "count-mismatch":
        torch.save({"data": images, "label": labels[:-3]}, pt)
        return pt, [], "17 labels for 20 images"
    if kind == "nan":
        bad = images.clone()
        bad[3, 0, 5, 5] = float("nan")
        torch.save({"data": bad, "label": labels}, pt)
        return pt, [], "NaN or Inf"
    if kind == "inf-labels":
        torch.save({"data": images, "label": torch.full((20, 10), float("inf"))}, pt)
        return pt, [], "NaN or Inf"
    if kind == "label-out-of-range":
        torch.save({"data": images, "label": labels + 5}, pt)
        return pt, [], "out of range"
    if kind == "npz-keys":
        path = folder / "bad.npz"
        np.savez(path, pictures=images.numpy(), classes=labels.numpy())
        return path, [], "expected keys images/data/x"
    if kind == "npz-object":
        path = folder / "bad.npz"
        np.savez(path, images=np.array([object()], dtype=object), labels=labels.numpy())
        return path, [], "pickled object arrays"
    if kind == "no-pixel-space":
        torch.save({"data": images, "label": labels}, pt)
        return pt, ["--no-space"], "--pixel-space"
    if kind == "not-torch":
        pt.write_bytes(b"this is not a tensor file")
        return pt, [], "cannot read bad.pt"
    if kind == "soft-logits":
        torch.save({"data": images, "label": torch.randn(20, 10)}, pt)
        return pt, [], "softmax"
    if kind == "image-size":
        from PIL import Image

        (folder / "imgs" / "00000").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8), mode="L").save(folder / "imgs" / "00000" / "a.png")
        return folder / "imgs", ["--no-space"], "28x28"
    raise AssertionError(kind)


BAD = ["pickled-object", "wrong-shape", "count-mismatch", "nan", "inf-labels", "label-out-of-range", "npz-keys",
       "npz-object", "no-pixel-space", "not-torch", "soft-logits", "image-size"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_are_one_line_and_write_nothing(kind, picked, tmp_path):
    images, labels, _, _ = picked
    path, extra, needle = _bad(kind, tmp_path, images, labels)
    space = [] if "--no-space" in extra else ["--pixel-space", "normalized"]
    out = tmp_path / "out"
    result = run(str(path), "--source", "embedded", *space, "--out", str(out))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert not out.exists()


def test_import_evaluate_audit_publish(picked, tmp_path, monkeypatch):
    """The reference DM loop's file -> import -> evaluate (smoke) -> audit (pixels, smoke) -> publish."""
    from hub_server import FakeHub
    from test_hub import SECRET, _point_clients_at

    from distilkit.cli import audit, evaluate, info, publish  # noqa: F401  (register)

    images, labels, _, _ = picked
    torch.save({"data": images, "label": labels}, tmp_path / "dm.pt")
    out = tmp_path / "imported"
    assert run(str(tmp_path / "dm.pt"), "--source", "embedded", "--pixel-space", "normalized",
               "--out", str(out)).exit_code == 0
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(out)])
    assert result.exit_code == 0 and "imported (torch-dict dm.pt, sha256" in result.output, result.output
    result = runner.invoke(cli, ["evaluate", str(out), "--runs", "1", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["audit", str(out), "--only", "pixels", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    dset = DistilledSet.load(out)
    assert dset.evaluation and dset.evaluation[0]["preset"] == "smoke"
    assert json.loads((out / "audit" / "report.json").read_text())["audits"]["pixels"]
    server = FakeHub().start()
    try:
        server.write_tokens = {SECRET}
        _point_clients_at(monkeypatch, server.url)
        result = runner.invoke(cli, ["publish", str(out), "distilkit-tests/imported", "--token", SECRET])
        assert result.exit_code == 0, result.output
        card = server.read("distilkit-tests/imported", "README.md").decode()
        assert "imported:" in card and dset.provenance["imported"]["sha256"] in card
        assert str(tmp_path) not in card  # the card names the file, never the local path
    finally:
        server.stop()
