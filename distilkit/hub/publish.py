"""Publish a set folder to a Hub dataset repo, and push audit results back to a repo.

``publish_set`` makes two commits, the fewest the libraries allow: ``Dataset.push_to_hub`` (the
parquet data, with ``configs``/``dataset_info`` in the card), then one ``create_commit`` with the
merged card and the artifacts (preview, ZCA matrix, recipe, history, audit report and figures).
Card commits are race-safe: they name their ``parent_commit`` and, on HTTP 412 (someone committed
in between), re-read the card, re-merge and try again. Nothing here writes to the local folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distilkit import jsonio
from distilkit.distilled import HISTORY_FILE, PREVIEW_FILE, RECIPE_FILE, DistilledSet
from distilkit.errors import DistilkitError
from distilkit.hub.merge import DEFAULT_CONFIG, merge_audit, merge_card, repo_prefix, split_card
from distilkit.hub.repo import REPO_ID, HubRef, hub_call, hub_error, resolve_token

ARTIFACTS = (PREVIEW_FILE, "zca.safetensors", RECIPE_FILE, HISTORY_FILE)
MAX_CARD_ATTEMPTS = 5


@dataclass
class Published:
    repo_id: str
    config: str
    data_commit: str
    card_commit: str
    files: list[str]

    @property
    def ref(self) -> HubRef:
        return HubRef(self.repo_id, None, self.config)


def artifact_paths(folder: Path) -> list[str]:
    """The set's files besides data and card, relative to ``folder``."""
    paths = [name for name in ARTIFACTS if (folder / name).is_file()]
    audit = folder / "audit"
    if audit.is_dir():
        paths += sorted(p.relative_to(folder).as_posix() for p in audit.rglob("*")
                        if p.is_file() and not p.name.startswith("."))
    return paths


def read_hub_card(api, repo_id: str, revision: str) -> str | None:
    """README.md at ``revision`` (a commit sha), or None when the repo has none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        path = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=api.token,
                               endpoint=api.endpoint)
    except RemoteEntryNotFoundError:
        return None
    return Path(path).read_text(encoding="utf-8")


def commit_card(api, repo_id: str, revision: str | None, parent: str, merge: Callable[[str | None], str],
                files: dict[str, Path], message: str) -> str:
    """Commit ``merge(card on the Hub)`` plus ``files`` on top of ``parent``; on HTTP 412 re-read the
    card at the new head and merge again. Returns the new commit sha."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(MAX_CARD_ATTEMPTS):
        card = merge(read_hub_card(api, repo_id, parent))
        operations = [CommitOperationAdd("README.md", card.encode("utf-8"))]
        operations += [CommitOperationAdd(path, str(local)) for path, local in files.items()]
        try:
            return api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                                     revision=revision, parent_commit=parent).oid
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 412:
                raise
            parent = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    raise DistilkitError(f"{repo_id}: the card kept changing on the Hub during {MAX_CARD_ATTEMPTS} attempts; "
                         "try again")


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id):
        raise DistilkitError(f"{repo_id!r} is not a repo id; use <namespace>/<name>")


def publish_set(folder: str | Path, repo_id: str, config_name: str = DEFAULT_CONFIG, private: bool = False,
                token: str | None = None, revision: str | None = None) -> Published:
    """Push the set in ``folder`` to dataset repo ``repo_id`` as config ``config_name``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    from distilkit.hub.card import render_card

    folder = Path(folder)
    check_repo_id(repo_id)
    if config_name == "data" or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", config_name):
        raise DistilkitError(f"--config-name {config_name!r} is not usable; use letters, digits, '-', '_' or '.'")
    dset = DistilledSet.load(folder)
    local_card = (folder / "README.md").read_text(encoding="utf-8")
    token = resolve_token(token)
    target = f"hf://datasets/{repo_id}"
    cli_ref = str(HubRef(repo_id, revision, config_name))
    ours = render_card(dset, repo_id, config_name=config_name, cli_ref=cli_ref)
    ours = _with_local_sections(ours, local_card)
    api = HfApi(token=token)
    with hub_call("publish to", target, token):
        try:  # fail before uploading anything when the card on the Hub cannot be merged
            head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
            split_card(read_hub_card(api, repo_id, head), target)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            pass  # push_to_hub creates the repo (and the branch)
    with hub_call("publish to", target, token):
        data_commit = dset.to_dataset().push_to_hub(
            repo_id, config_name=config_name, private=private, token=token, revision=revision,
            commit_message=f"distilkit: {dset.method} IPC {dset.ipc} data ({config_name})").oid
    prefix = repo_prefix(config_name)
    files = {prefix + rel: folder / rel for rel in artifact_paths(folder)}
    try:
        card_commit = commit_card(api, repo_id, revision, data_commit,
                                  lambda hub_text: merge_card(hub_text, ours, config_name, target), files,
                                  f"distilkit: card and artifacts ({config_name})")
    except DistilkitError:
        raise
    except Exception as err:
        line = str(hub_error(err, "publish to", target, token))
        raise DistilkitError(f"{line} (the data was pushed in commit {data_commit[:10]}, the card and artifacts "
                             "were not: run publish again)") from None
    return Published(repo_id, config_name, data_commit, card_commit, ["README.md", *files])


def _with_local_sections(ours: str, local_card: str) -> str:
    """Our rendered card with the audit section of the local card (rendering only knows evaluation)."""
    from distilkit.hub.card import replace_section
    from distilkit.hub.merge import extract_section

    section = extract_section(local_card, "audit")
    return replace_section(ours, "audit", section) if section else ours


def push_audit(view: Path, ref: HubRef, parent: str, token: str | None) -> str:
    """Commit the audited view's card section, summaries and ``audit/`` files to the repo (only
    those); race-safe on ``parent``. Returns the new commit sha."""
    from huggingface_hub import HfApi

    token = resolve_token(token)
    config = ref.config or DEFAULT_CONFIG
    target = str(ref)
    view_card = (view / "README.md").read_text(encoding="utf-8")
    report_file = view / "audit" / "report.json"
    if report_file.is_file():  # name the repo, not the temporary view, as the audited set
        report = json.loads(report_file.read_text())
        report["set"] = target
        report_file.write_text(jsonio.dumps(report, indent=2, default=str))
    prefix = repo_prefix(config)
    files = {prefix + rel: view / rel for rel in artifact_paths(view) if rel.startswith("audit/")}
    api = HfApi(token=token)
    with hub_call("push the audit to", target, token):
        return commit_card(api, ref.repo_id, ref.revision, parent,
                           lambda hub_text: merge_audit(hub_text or "", view_card, config, target), files,
                           f"distilkit: audit results ({config})")
