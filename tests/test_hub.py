"""Share on the Hub: publish, load in a fresh process, audit --push, verify, and the failure modes.

Every test talks HTTP through the real huggingface_hub and datasets clients, to the in-repo fake
Hub (tests/hub_server.py) or, when DISTILKIT_LIVE_HUB_TOKEN is set, also to the real Hub (tests
that inject failures or edit the server's state directly run against the fake Hub only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import one_error_line as assert_one_error_line
from conftest import tree_digest
from hub_server import FakeHub

from distilkit.cli import audit, cli, evaluate, info, publish, verify  # noqa: F401  (register commands)

SECRET = "hf_writeTokenThatMustNeverLeak"
LIVE_TOKEN = os.environ.get("DISTILKIT_LIVE_HUB_TOKEN")


@dataclass
class HubTarget:
    """Where the tests publish: endpoint, a write token, a namespace, and the fake server (or None)."""

    url: str
    token: str
    namespace: str
    server: FakeHub | None
    created: list[str] = field(default_factory=list)

    def new_repo(self, stem: str) -> str:
        self.created.append(f"{self.namespace}/distilkit-test-{stem}-{uuid.uuid4().hex[:8]}")
        return self.created[-1]

    def card(self, repo_id: str) -> str:
        from huggingface_hub import hf_hub_download

        if self.server is not None:
            return self.server.read(repo_id, "README.md").decode()
        return Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", token=self.token,
                                    force_download=True)).read_text()

    def files(self, repo_id: str) -> set[str]:
        from huggingface_hub import HfApi

        return set(HfApi(token=self.token).list_repo_files(repo_id, repo_type="dataset"))

    def edit_card(self, repo_id: str, edit) -> None:
        from huggingface_hub import HfApi

        HfApi(token=self.token).upload_file(path_or_fileobj=edit(self.card(repo_id)).encode(), path_in_repo="README.md",
                                            repo_id=repo_id, repo_type="dataset", commit_message="edit by hand")


def _point_clients_at(monkeypatch, url: str) -> None:
    """Undo conftest's offline mode for this test and aim both clients (and subprocesses) at ``url``."""
    import datasets.config
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", url)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    for key, value in {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                       "HF_HUB_DISABLE_XET": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(params=["fake", "live"])
def hub(request, monkeypatch):
    if request.param == "live":
        if not LIVE_TOKEN:
            pytest.skip("set DISTILKIT_LIVE_HUB_TOKEN to run against the real Hub")
        from huggingface_hub import HfApi

        _point_clients_at(monkeypatch, "https://huggingface.co")
        target = HubTarget("https://huggingface.co", LIVE_TOKEN, HfApi(token=LIVE_TOKEN).whoami()["name"], None)
        yield target
        for repo_id in target.created:
            HfApi(token=LIVE_TOKEN).delete_repo(repo_id, repo_type="dataset", missing_ok=True)
        return
    server = FakeHub().start()
    server.write_tokens = {SECRET}
    _point_clients_at(monkeypatch, server.url)
    yield HubTarget(server.url, SECRET, "distilkit-tests", server)
    server.stop()


@pytest.fixture
def fake_hub(hub):
    if hub.server is None:
        pytest.skip("needs the fake Hub (failure injection or direct state edits)")
    return hub


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, embedded_real):
    """20 images (2 per class) in normalised pixel space with soft labels, and an honest smoke claim (1 run)."""
    from distilkit.data.pixel_space import PixelSpace
    from distilkit.data.sources import SourceConfig
    from distilkit.distilled import DistilledSet
    from distilkit.evaluate import evaluate_folder

    real = embedded_real
    idx = torch.cat([torch.nonzero(real.train_labels == c).flatten()[:2] for c in range(len(real.class_names))])
    space = PixelSpace("normalized", [0.2860], [0.3530])
    generator = torch.Generator().manual_seed(0)
    images = space.from_uint8(real.train_images[idx]) + 0.1 * torch.randn(len(idx), 1, 28, 28, generator=generator)
    soft = torch.softmax(4 * torch.nn.functional.one_hot(real.train_labels[idx], 10).float()
                         + torch.randn(len(idx), 10, generator=generator), dim=1)
    dset = DistilledSet(images=images, labels=real.train_labels[idx], class_names=real.class_names,
                        pixel_space=space, method="random", ipc=2, soft_labels=soft,
                        config={"method": "random", "ipc": 2, "source": SourceConfig().__dict__},
                        source=real.info, provenance={"seed": 0, "distilkit_version": "test", "preset": "smoke"})
    folder = tmp_path_factory.mktemp("sets") / "tiny"
    dset.save(folder)
    evaluate_folder(folder, runs=1, preset="smoke")
    return folder


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def one_error_line(result, *needles: str) -> str:
    line = assert_one_error_line(result, *needles)
    assert SECRET not in result.output
    return line


def fresh_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter (new caches, the endpoint from the environment)."""
    env = {**os.environ, "HF_HOME": str(cwd / "hf-home"), "HF_DATASETS_CACHE": str(cwd / "hf-datasets")}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def publish_tiny(hub: HubTarget, tiny_set: Path, stem: str, *extra: str) -> str:
    repo_id = hub.new_repo(stem)
    result = run_cli("publish", str(tiny_set), repo_id, "--token", hub.token, *extra)
    assert result.exit_code == 0, result.output
    assert hub.token not in result.output
    return repo_id


# ------------------------------------------------------------------------------------ happy paths
def test_publish_then_load_in_a_fresh_process_is_bit_exact_and_the_card_snippet_runs(hub, tiny_set, tmp_path):
    from distilkit.distilled import DistilledSet

    before = tree_digest(tiny_set)
    repo_id = publish_tiny(hub, tiny_set, "load")
    result = run_cli("publish", str(tiny_set), repo_id, "--config-name", "ipc2", "--token", hub.token)
    assert result.exit_code == 0, result.output
    assert tree_digest(tiny_set) == before
    files = hub.files(repo_id)
    assert {"README.md", "preview.png", "distilkit_recipe.yaml", "ipc2/preview.png"} <= files
    assert any(re.fullmatch(r"data/train-.*\.parquet", f) for f in files)
    assert any(re.fullmatch(r"ipc2/train-.*\.parquet", f) for f in files)
    card = hub.card(repo_id)
    assert hub.token not in card and card.count("<!-- distilkit:set:start -->") == 1
    assert card.count("<!-- distilkit:set:ipc2:start -->") == 1
    snippets = re.findall(r"## How to use\s+```python\n(.*?)```", card, re.DOTALL)
    assert f'load_dataset("{repo_id}", split="train")' in snippets[0]
    assert f'load_dataset("{repo_id}", "ipc2", split="train")' in snippets[1]

    script = textwrap.dedent(f"""
        import json, numpy as np
        from datasets import load_dataset
        from huggingface_hub import DatasetCard
        out = {{}}
        for config in ("default", "ipc2"):
            ds = load_dataset({repo_id!r}, config, split="train").with_format("numpy")
            out[config] = {{k: ds[:][k] for k in ("image", "label", "soft_label")}}
        np.savez("loaded.npz", **{{f"{{c}}_{{k}}": v for c, d in out.items() for k, v in d.items()}})
        meta = DatasetCard.load({repo_id!r}, repo_type="dataset").data["distilkit"]
        json.dump({{"default": meta["pixel_space"], "ipc2": meta["configs"]["ipc2"]["pixel_space"]}},
                  open("facts.json", "w"))
    """) + snippets[1]  # the card's own "how to use" snippet, verbatim, in the same fresh process
    proc = fresh_python(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final training loss" in proc.stdout
    local = DistilledSet.load(tiny_set)
    loaded = np.load(tmp_path / "loaded.npz")
    facts = json.loads((tmp_path / "facts.json").read_text())
    for config in ("default", "ipc2"):
        assert loaded[f"{config}_image"].dtype == np.float32
        assert np.array_equal(loaded[f"{config}_image"], local.images.numpy())
        assert np.array_equal(loaded[f"{config}_label"], local.labels.numpy())
        assert np.array_equal(loaded[f"{config}_soft_label"], local.soft_labels.numpy())
        assert facts[config] == local.pixel_space.to_card()

    result = run_cli("info", f"hf://datasets/{repo_id}/ipc2", "--token", hub.token)
    assert result.exit_code == 0 and "random (IPC 2, 20 images, 10 classes)" in result.output, result.output
    result = run_cli("info", repo_id)  # two configs; the default one is picked
    assert result.exit_code == 0, result.output


def test_publish_keeps_what_the_repo_card_already_has(fake_hub, tiny_set):
    repo_id = fake_hub.new_repo("merge")
    fake_hub.server.create_repo(repo_id, {"README.md": b"---\nlicense: cc-by-4.0\nmaintainer_note: keep me\n"
                                                       b"tags:\n- mine\n---\n\nHand-written introduction.\n"})
    publish_tiny_to(fake_hub, tiny_set, repo_id)
    card = fake_hub.card(repo_id)
    data = yaml.safe_load(card.split("---")[1])
    assert data["license"] == "cc-by-4.0" and data["maintainer_note"] == "keep me"
    assert data["tags"][0] == "mine" and "dataset-distillation" in data["tags"]
    assert data["distilkit"]["method"] == "random" and data["configs"][0]["config_name"] == "default"
    assert "Hand-written introduction." in card and "## How to use" in card
    publish_tiny_to(fake_hub, tiny_set, repo_id)  # publishing again replaces our block, keeps the rest
    card = fake_hub.card(repo_id)
    assert card.count("<!-- distilkit:set:start -->") == 1 and card.count("## How to use") == 1
    assert "Hand-written introduction." in card and "maintainer_note: keep me" in card


def test_publish_to_a_branch(fake_hub, tiny_set):
    repo_id = publish_tiny(fake_hub, tiny_set, "branch", "--revision", "dev", "--config-name", "ipc2")
    assert not any(p.endswith(".parquet") for p in fake_hub.server.repos[repo_id].resolve("main").files)
    assert "ipc2/preview.png" in fake_hub.server.repos[repo_id].resolve("dev").files
    result = run_cli("info", f"hf://datasets/{repo_id}@dev/ipc2")
    assert result.exit_code == 0 and "IPC 2" in result.output, result.output
    assert f"hf://datasets/{repo_id}@dev/ipc2" in fake_hub.server.read(repo_id, "README.md", "dev").decode()


def publish_tiny_to(hub: HubTarget, tiny_set: Path, repo_id: str) -> None:
    result = run_cli("publish", str(tiny_set), repo_id, "--token", hub.token)
    assert result.exit_code == 0, result.output


def test_audit_push_is_race_safe_and_keeps_others_text(hub, tiny_set):
    repo_id = publish_tiny(hub, tiny_set, "audit")
    note = "A note someone added while the audit ran."
    if hub.server is not None:  # someone commits between our download and our card commit -> HTTP 412
        hub.server.on_next_commit(repo_id, lambda: hub.server.commit(
            repo_id, {"README.md": hub.server.read(repo_id, "README.md") + f"\n{note}\n".encode()}))
    else:
        hub.edit_card(repo_id, lambda text: text + f"\n{note}\n")
    for _ in range(2):
        result = run_cli("audit", repo_id, "--push", "--only", "pixels", "--preset", "smoke", "--token", hub.token)
        assert result.exit_code == 0, result.output
        assert "pushed the audit" in result.output
    card = hub.card(repo_id)
    assert note in card
    assert card.count("<!-- distilkit:audit:start -->") == 1 and card.count("<!-- distilkit:audit:end -->") == 1
    assert "No audits yet" not in card
    assert "pixels" in yaml.safe_load(card.split("---")[1])["distilkit"]["audits"]
    assert "audit/report.json" in hub.files(repo_id)
    if hub.server is not None:
        report = json.loads(hub.server.read(repo_id, "audit/report.json"))
        assert report["set"] == f"hf://datasets/{repo_id}"


def test_verify_passes_an_honest_card_and_fails_an_inflated_one(hub, tiny_set):
    repo_id = publish_tiny(hub, tiny_set, "verify")
    result = run_cli("verify", repo_id, "--token", hub.token)
    assert result.exit_code == 0, result.output
    assert "holds" in result.output and "every claim holds" in result.output
    result = run_cli("evaluate", repo_id, "--runs", "1", "--preset", "smoke", "--token", hub.token)
    assert result.exit_code == 0 and "results not written" in result.output, result.output

    def inflate(text: str) -> str:
        return re.sub(r"(\n    mean: )([0-9.]+)", lambda m: f"{m[1]}{min(1.0, float(m[2]) + 0.2):.6f}", text, count=1)

    if hub.server is not None:
        hub.server.commit(repo_id, {"README.md": inflate(hub.server.read(repo_id, "README.md").decode()).encode()})
    else:
        hub.edit_card(repo_id, inflate)
    result = run_cli("verify", f"hf://datasets/{repo_id}", "--token", hub.token)
    assert result.exit_code == 1, result.output
    assert "DOES NOT HOLD" in result.output


# ---------------------------------------------------------------------------------- failure modes
def test_wrong_or_read_only_token_is_one_line(fake_hub, tiny_set):
    fake_hub.server.read_tokens = {"hf_readOnlyToken"}
    before = tree_digest(tiny_set)
    repo_id = fake_hub.new_repo("auth")
    result = run_cli("publish", str(tiny_set), repo_id, "--token", "hf_wrongTokenValue")
    line = one_error_line(result, "HTTP 401")
    assert "hf_wrongTokenValue" not in result.output and "hf_wrongTokenValue" not in line
    fake_hub.server.create_repo(repo_id)
    result = run_cli("publish", str(tiny_set), repo_id, "--token", "hf_readOnlyToken")
    one_error_line(result, "HTTP 403")
    assert "hf_readOnlyToken" not in result.output
    assert tree_digest(tiny_set) == before


def test_token_from_environment_is_used_and_never_shown(fake_hub, tiny_set, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    repo_id = fake_hub.new_repo("envtoken")
    result = run_cli("publish", str(tiny_set), repo_id)
    assert result.exit_code == 0 and SECRET not in result.output, result.output
    assert all(token in (None, SECRET) for _, _, token in fake_hub.server.requests)
    for path, data in fake_hub.server.repos[repo_id].resolve("main").files.items():
        assert SECRET.encode() not in data, path


def test_repo_not_found_is_one_line(fake_hub):
    for command in ("info", "verify", "evaluate", "audit"):
        one_error_line(run_cli(command, f"{fake_hub.namespace}/no-such-set"), "not found")
    fake_hub.server.fail("GET", r"/api/datasets/", 404)
    one_error_line(run_cli("info", f"hf://datasets/{fake_hub.namespace}/hidden"), "not found")


def test_network_failure_mid_upload_is_one_line(fake_hub, tiny_set):
    before = tree_digest(tiny_set)
    repo_id = fake_hub.new_repo("drop")
    fake_hub.server.fail("POST", r"/commit/", "drop")
    result = run_cli("publish", str(tiny_set), repo_id, "--token", fake_hub.token)
    one_error_line(result, "network failure")
    assert tree_digest(tiny_set) == before
    assert not any(p.endswith(".parquet") for p in fake_hub.server.repos[repo_id].resolve("main").files)
    # dropped on the second commit (card and artifacts): the line says the data went up and what to do
    fake_hub.server.on_next_commit(repo_id, lambda: fake_hub.server.fail("POST", r"/commit/", "drop"))
    result = run_cli("publish", str(tiny_set), repo_id, "--token", fake_hub.token)
    one_error_line(result, "network failure", "data was pushed", "run publish again")
    files = fake_hub.server.repos[repo_id].resolve("main").files
    assert any(p.endswith(".parquet") for p in files) and "preview.png" not in files
    assert tree_digest(tiny_set) == before


def test_failed_download_leaves_no_trusted_cache(fake_hub, tiny_set):
    from distilkit.hub.repo import hub_cache_dir

    repo_id = publish_tiny(fake_hub, tiny_set, "download")
    fake_hub.server.fail("GET", r"/resolve/.*\.parquet$", 403, times=None)
    one_error_line(run_cli("info", repo_id), "HTTP 403")
    repo_cache = hub_cache_dir() / repo_id.replace("/", "--")
    leftovers = [p.name for p in repo_cache.iterdir() if p.name != "refs"] if repo_cache.exists() else []
    assert leftovers == []
    fake_hub.server.failures.clear()
    assert run_cli("info", repo_id).exit_code == 0


def test_hub_card_that_is_not_valid_yaml(fake_hub, tiny_set):
    repo_id = fake_hub.new_repo("badyaml")
    fake_hub.server.create_repo(repo_id, {"README.md": b"---\nlicense: [mit\ndistilkit: {\n---\n# broken\n"})
    commits = len(fake_hub.server.repos[repo_id].commits)
    one_error_line(run_cli("publish", str(tiny_set), repo_id, "--token", fake_hub.token), "not valid YAML")
    assert len(fake_hub.server.repos[repo_id].commits) == commits and not fake_hub.server.lfs_objects
    for command in ("verify", "info", "audit"):
        one_error_line(run_cli(command, repo_id), "YAML")


def test_repo_that_is_not_a_distilkit_set(fake_hub):
    repo_id = fake_hub.new_repo("foreign")
    fake_hub.server.create_repo(repo_id, {"README.md": b"---\nlicense: mit\n---\n# Someone's dataset\n",
                                          "data/train-00000-of-00001.parquet": b"PAR1"})
    for args in (("verify", repo_id), ("audit", repo_id, "--push", "--preset", "smoke"), ("info", repo_id)):
        one_error_line(run_cli(*args), "not a distilkit set")
    assert len(fake_hub.server.repos[repo_id].commits) == 1


def test_push_needs_a_repo_and_bad_config_names_fail_early(tiny_set):
    one_error_line(run_cli("audit", str(tiny_set), "--push"), "--push needs a Hub repo id")
    one_error_line(run_cli("publish", str(tiny_set), "no-namespace"), "not a repo id")
    one_error_line(run_cli("publish", str(tiny_set), "a/b", "--config-name", "data"), "--config-name")


# ------------------------------------------------------------------ output and Hub safety (issue 21)
def _other_audit_entry() -> dict:
    return {"question": 2, "preset": "smoke", "seed": 0, "config": {}, "summary": {"score": 0.5},
            "verdict": "someone else's audit.", "tables": [], "figures": [], "artifacts": [], "date": "2026-01-01"}


def test_audit_push_412_merges_the_report_too(fake_hub, tiny_set):
    """Someone pushes another audit between our download and our commit (HTTP 412): after the retry the
    repo's audit/report.json, card YAML and card section hold both audits, theirs and ours."""
    server = fake_hub.server
    repo_id = publish_tiny(fake_hub, tiny_set, "audit412")

    def someone_else_pushes_an_audit() -> None:
        card = server.read(repo_id, "README.md").decode()
        data = yaml.safe_load(card.split("---")[1])
        data["distilkit"]["audits"] = {"other": {"question": 2, "preset": "smoke", "date": "2026-01-01",
                                                 "summary": {"score": 0.5}}}
        body = card.split("---", 2)[2]
        report = {"distilkit_version": "test", "created": "2026-01-01T00:00:00+00:00", "set": f"hf://datasets/{repo_id}",
                  "source": "embedded:fashion_mnist", "model_cache": {}, "audits": {"other": _other_audit_entry()}}
        server.commit(repo_id, {"README.md": f"---\n{yaml.safe_dump(data, sort_keys=False)}---{body}".encode(),
                                "audit/report.json": json.dumps(report).encode(),
                                "audit/other.png": b"their figure"})

    server.on_next_commit(repo_id, someone_else_pushes_an_audit)
    result = run_cli("audit", repo_id, "--push", "--only", "pixels", "--preset", "smoke", "--token", fake_hub.token)
    assert result.exit_code == 0, result.output
    report = json.loads(server.read(repo_id, "audit/report.json"))
    assert set(report["audits"]) == {"other", "pixels"}
    assert report["set"] == f"hf://datasets/{repo_id}"
    card = fake_hub.card(repo_id)
    assert set(yaml.safe_load(card.split("---")[1])["distilkit"]["audits"]) == {"other", "pixels"}
    assert "#### `other`" in card and "#### `pixels`" in card and "someone else's audit." in card
    assert server.read(repo_id, "audit/other.png") == b"their figure"
    assert "audit/pixels_histogram.png" in server.repos[repo_id].resolve("main").files


def test_republishing_keeps_the_hub_audit_of_the_same_set_and_drops_a_stale_one(fake_hub, tiny_set, tmp_path):
    """Decision (README, Share on the Hub): publishing a folder without an audit keeps the repo's audit of
    that config when the repo holds the same set (same provenance); a different set removes the repo's
    audit files, summaries and section, so card and files always agree."""
    from distilkit.distilled import DistilledSet

    server = fake_hub.server
    repo_id = publish_tiny(fake_hub, tiny_set, "republish")
    result = run_cli("audit", repo_id, "--push", "--only", "pixels", "--preset", "smoke", "--token", fake_hub.token)
    assert result.exit_code == 0, result.output
    assert not (tiny_set / "audit").exists()
    publish_tiny_to(fake_hub, tiny_set, repo_id)  # the same set again, from a folder without an audit
    card = fake_hub.card(repo_id)
    assert "pixels" in yaml.safe_load(card.split("---")[1])["distilkit"]["audits"]
    assert "#### `pixels`" in card
    assert {"audit/report.json", "audit/pixels_histogram.png"} <= set(server.repos[repo_id].resolve("main").files)

    other = DistilledSet.load(tiny_set)
    other.provenance = {**other.provenance, "seed": 1}
    other.images = other.images + 0.01
    other.save(tmp_path / "other")
    result = run_cli("publish", str(tmp_path / "other"), repo_id, "--token", fake_hub.token)
    assert result.exit_code == 0, result.output
    assert "removed 2 stale audit files" in result.output
    card = fake_hub.card(repo_id)
    assert not yaml.safe_load(card.split("---")[1])["distilkit"].get("audits")
    assert "#### `pixels`" not in card and "No audits yet" in card
    assert not [p for p in server.repos[repo_id].resolve("main").files if p.startswith("audit/")]


def test_published_files_name_no_local_path_and_revision_is_named(fake_hub, tmp_path):
    """A set distilled from a local folder, evaluated and audited locally, then published to a branch:
    no uploaded text file names the machine's paths; the success line and load hint name the branch."""
    from conftest import write_image_dataset

    from distilkit.cli import distill  # noqa: F401  (registers the command)

    src = write_image_dataset(tmp_path / "my-source", n_per_class=3, size=8)
    out = tmp_path / "work" / "my-set"
    for args in (("distill", "--method", "random", "--preset", "smoke", "--ipc", "1", "--source", str(src),
                  "--out", str(out)),
                 ("evaluate", str(out), "--runs", "1", "--preset", "smoke"),
                 ("audit", str(out), "--only", "pixels", "--preset", "smoke")):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
    assert str(tmp_path) in (out / "README.md").read_text()  # the local card does name them
    repo_id = fake_hub.new_repo("paths")
    result = run_cli("publish", str(out), repo_id, "--revision", "dev", "--token", fake_hub.token)
    assert result.exit_code == 0, result.output
    assert f"hf://datasets/{repo_id}@dev" in result.output and "revision='dev'" in result.output
    files = fake_hub.server.repos[repo_id].resolve("dev").files
    texts = {p: d.decode() for p, d in files.items() if p.endswith((".md", ".yaml", ".json"))}
    assert {"README.md", "distilkit_recipe.yaml", "audit/report.json"} <= set(texts)
    for path, text in texts.items():
        for local in {str(tmp_path), str(tmp_path.resolve()), "pytest-of"}:
            assert local not in text, (path, local)
    meta = yaml.safe_load(texts["README.md"].split("---")[1])["distilkit"]
    assert meta["source"]["id"] == "local:my-source" and meta["config"]["out"] == "local:my-set"
    assert "local:my-source distilled" in texts["README.md"]
    # the card no longer says where the source is: commands that need it ask for it in one line
    one_error_line(run_cli("evaluate", f"hf://datasets/{repo_id}@dev", "--runs", "1", "--preset", "smoke"),
                   "pass --source")
    # an audit pushed with the local source keeps its path off the Hub too
    result = run_cli("audit", f"hf://datasets/{repo_id}@dev", "--push", "--only", "pixels", "--preset", "smoke",
                     "--source", str(src), "--token", fake_hub.token)
    assert result.exit_code == 0, result.output
    files = fake_hub.server.repos[repo_id].resolve("dev").files
    for path in ("README.md", "audit/report.json"):
        assert str(tmp_path) not in files[path].decode() and "pytest-of" not in files[path].decode(), path
    assert json.loads(files["audit/report.json"])["source"] == "local:my-source"


class SilentServer:
    """A loopback TCP server that accepts connections and never answers (stops by itself)."""

    def __init__(self, lifetime: float = 60.0) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._held: list = []
        self._stop = threading.Event()
        self._deadline = lifetime
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import time

        end = time.monotonic() + self._deadline
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._held.append(conn)
        for conn in self._held:
            conn.close()
        self.sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_hub_calls_time_out_with_one_line(tiny_set, monkeypatch):
    """Against a server that accepts and never answers, info and publish stop after the configured
    timeout (0.5 s here) and one retry of each read, with one line; nothing local changes."""
    import time

    server = SilentServer()
    try:
        _point_clients_at(monkeypatch, server.url)
        monkeypatch.setenv("DISTILKIT_HUB_TIMEOUT", "0.5")
        monkeypatch.setenv("DISTILKIT_HUB_RETRIES", "1")
        before = tree_digest(tiny_set)
        for args in (("info", "someone/some-set"), ("publish", str(tiny_set), "someone/some-set", "--token", SECRET)):
            accepted = server.accepted
            started = time.monotonic()
            one_error_line(run_cli(*args), "did not answer within 0.5 s", "DISTILKIT_HUB_TIMEOUT")
            assert time.monotonic() - started < 20
            assert server.accepted - accepted >= 2  # the read was tried again
        assert tree_digest(tiny_set) == before
        monkeypatch.setenv("DISTILKIT_HUB_TIMEOUT", "never")
        one_error_line(run_cli("info", "someone/some-set"), "DISTILKIT_HUB_TIMEOUT")
    finally:
        server.stop()
