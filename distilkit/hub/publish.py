"""Publish a set folder to a Hub dataset repo, and push audit results back to a repo.

``publish_set`` makes two commits, the fewest the libraries allow: ``Dataset.push_to_hub`` (the
parquet data, with ``configs``/``dataset_info`` in the card), then one ``create_commit`` with the
merged card and the artifacts (preview, ZCA matrix, recipe, history, audit report and figures).
Card commits are race-safe: they name their ``parent_commit`` and, on HTTP 412 (someone committed
in between), re-read the card (and ``audit/report.json``), re-merge and try again. Nothing here writes
to the local folder.

What goes to the Hub names no local machine path: the card, recipe, history and audit report name
the source by its Hub id (or ``local:<folder name>``) and the set by ``local:<folder name>``
(:class:`LocalPaths`). The repo's audit of a config stays consistent with its card: publishing a folder
that has an audit replaces the repo's ``audit/`` files of that config; a folder without one keeps the
repo's audit when the repo holds the same set (same provenance), and otherwise deletes its files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilkit import jsonio
from distilkit.distilled import HISTORY_FILE, PREVIEW_FILE, RECIPE_FILE, DistilledSet
from distilkit.errors import ConfigError, DistilkitError, HubError
from distilkit.hub.merge import (
    DEFAULT_CONFIG,
    carry_audit,
    config_entry,
    config_names,
    merge_audit,
    merge_card,
    repo_prefix,
    split_card,
)
from distilkit.hub.repo import REPO_ID, HubRef, hub_call, hub_error, resolve_token, with_retries

ARTIFACTS = (PREVIEW_FILE, "zca.safetensors", RECIPE_FILE, HISTORY_FILE)
REPORT_PATH = "audit/report.json"
MAX_CARD_ATTEMPTS = 5


@dataclass
class Published:
    repo_id: str
    config: str
    data_commit: str
    card_commit: str
    files: list[str]
    revision: str | None = None
    deleted: list[str] = field(default_factory=list)

    @property
    def ref(self) -> HubRef:
        return HubRef(self.repo_id, self.revision, self.config)


@dataclass
class CardCommit:
    """One card commit: the merged card, files to add (repo path -> local file or bytes), paths to delete."""

    card: str
    files: dict[str, Path | bytes]
    deletions: list[str] = field(default_factory=list)


class LocalPaths:
    """The machine paths a set's metadata names (its source, its folder, --out, an experts folder) and
    the neutral names a published card uses instead: the source's Hub id, else ``local:<folder name>``.

    Structured values are replaced when they equal a path; inside longer strings (an evaluation's test
    set, a report's text) only absolute paths and paths with a separator are replaced, so a short
    relative name never rewrites ordinary words."""

    def __init__(self, dset: DistilledSet, folder: Path) -> None:
        source = dset.source or {}
        config = dset.config or {}
        source_name = source.get("hub_id") or f"local:{_base_name(source.get('id'))}"
        self.exact: dict[str, str] = {}
        outputs = {config.get("out"), str(folder)}  # always local paths, whether or not they still exist
        for path, name in ((source.get("id"), source_name),
                           ((config.get("source") or {}).get("source"), source_name),
                           (config.get("out"), f"local:{_base_name(config.get('out'))}"),
                           ((config.get("method_args") or {}).get("experts"), None),
                           (str(folder), f"local:{_base_name(str(folder))}")):
            if isinstance(path, str) and path and (path in outputs or _is_local_path(path)):
                name = name or f"local:{_base_name(path)}"
                for form in {path, os.path.abspath(os.path.expanduser(path)), str(Path(path).expanduser().resolve())}:
                    self.exact.setdefault(form, name)
        self.inner = sorted(((p, n) for p, n in self.exact.items() if (os.sep in p or "/" in p) and len(p) >= 4),
                            key=lambda pair: -len(pair[0]))

    def text(self, text: str) -> str:
        for path, name in self.inner:
            text = text.replace(path, name)
        return text

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.exact.get(value) or self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def dset(self, dset: DistilledSet) -> DistilledSet:
        return dataclasses.replace(dset, source=self.data(dset.source), config=self.data(dset.config),
                                   provenance=self.data(dset.provenance), evaluation=self.data(dset.evaluation),
                                   card_extra=self.data(dset.card_extra), history=dset.history)


def _is_local_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or (text not in ("embedded",) and ":" not in text
                                                 and Path(text).expanduser().exists())


def _base_name(path) -> str:
    return Path(str(path or "set").rstrip("/\\")).name or "set"


def artifact_paths(folder: Path) -> list[str]:
    """The set's files besides data and card, relative to ``folder``."""
    paths = [name for name in ARTIFACTS if (folder / name).is_file()]
    audit = folder / "audit"
    if audit.is_dir():
        paths += sorted(p.relative_to(folder).as_posix() for p in audit.rglob("*")
                        if p.is_file() and not p.name.startswith("."))
    return paths


def read_hub_file(api, repo_id: str, path: str, revision: str) -> bytes | None:
    """The bytes of ``path`` at ``revision`` (a commit sha), or None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        local = hf_hub_download(repo_id, path, repo_type="dataset", revision=revision, token=api.token,
                                endpoint=api.endpoint)
    except RemoteEntryNotFoundError:
        return None
    return Path(local).read_bytes()


def read_hub_card(api, repo_id: str, revision: str) -> str | None:
    """README.md at ``revision`` (a commit sha), or None when the repo has none."""
    data = read_hub_file(api, repo_id, "README.md", revision)
    return None if data is None else data.decode("utf-8")


def hub_paths(api, repo_id: str, revision: str, prefix: str) -> list[str]:
    """The repo's files under ``prefix`` at ``revision``."""
    return sorted(p for p in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
                  if p.startswith(prefix))


def commit_card(api, repo_id: str, revision: str | None, parent: str,
                build: Callable[[str | None, str], CardCommit], message: str) -> str:
    """Commit ``build(card on the Hub, parent)`` on top of ``parent``; on HTTP 412 (someone committed in
    between) build again on the new head, so what they wrote is merged too. Returns the new commit sha."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(MAX_CARD_ATTEMPTS):
        plan = build(read_hub_card(api, repo_id, parent), parent)
        operations = [CommitOperationAdd("README.md", plan.card.encode("utf-8"))]
        operations += [CommitOperationAdd(path, local if isinstance(local, bytes) else str(local))
                       for path, local in plan.files.items()]
        operations += [CommitOperationDelete(path) for path in plan.deletions if path not in plan.files]
        try:
            return api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                                     revision=revision, parent_commit=parent).oid
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 412:
                raise
            parent = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    raise HubError(f"{repo_id}: the card kept changing on the Hub during {MAX_CARD_ATTEMPTS} attempts; "
                         "try again")


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id):
        raise ConfigError(f"{repo_id!r} is not a repo id; use <namespace>/<name>")


def publish_set(folder: str | Path, repo_id: str, config_name: str = DEFAULT_CONFIG, private: bool = False,
                token: str | None = None, revision: str | None = None) -> Published:
    """Push the set in ``folder`` to dataset repo ``repo_id`` as config ``config_name``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    from distilkit.card import render_card

    folder = Path(folder)
    check_repo_id(repo_id)
    if config_name == "data" or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", config_name):
        raise ConfigError(f"--config-name {config_name!r} is not usable; use letters, digits, '-', '_' or '.'")
    dset = DistilledSet.load(folder)
    local_card = (folder / "README.md").read_text(encoding="utf-8")
    paths = LocalPaths(dset, folder)
    public = paths.dset(dset)
    token = resolve_token(token)
    target = f"hf://datasets/{repo_id}"
    cli_ref = str(HubRef(repo_id, revision, config_name))
    ours = paths.text(_with_local_sections(render_card(public, repo_id, config_name=config_name, cli_ref=cli_ref),
                                           local_card))
    api = HfApi(token=token)
    with hub_call("publish to", target, token):
        try:  # fail before uploading anything when the card on the Hub cannot be merged
            head = with_retries(lambda: api.repo_info(repo_id, repo_type="dataset", revision=revision).sha)
            split_card(with_retries(lambda: read_hub_card(api, repo_id, head)), target)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            pass  # push_to_hub creates the repo (and the branch)
    with hub_call("publish to", target, token):
        data_commit = public.to_dataset().push_to_hub(
            repo_id, config_name=config_name, private=private, token=token, revision=revision,
            commit_message=f"distilkit: {dset.method} IPC {dset.ipc} data ({config_name})").oid
    prefix = repo_prefix(config_name)
    files: dict[str, Path | bytes] = {prefix + rel: _public_file(folder / rel, rel, paths)
                                      for rel in artifact_paths(folder)}
    local_audit = any(rel.startswith("audit/") for rel in artifact_paths(folder)) or bool(
        public.card_extra.get("audits"))
    ours_meta = split_card(ours, "our card")[0].get("distilkit") or {}
    deleted: list[str] = []

    def build(hub_text: str | None, parent: str) -> CardCommit:
        card = merge_card(hub_text, ours, config_name, target)
        remote_audit = hub_paths(api, repo_id, parent, prefix + "audit/")
        if not local_audit and _same_set(hub_text, ours_meta, config_name, target):
            card, stale = carry_audit(card, hub_text, config_name, target), []  # the repo's audit still holds
        else:
            stale = [p for p in remote_audit if p not in files]  # it described another set, or a replaced audit
        deleted[:] = stale
        return CardCommit(card, files, stale)

    try:
        card_commit = commit_card(api, repo_id, revision, data_commit, build,
                                  f"distilkit: card and artifacts ({config_name})")
    except DistilkitError:
        raise
    except Exception as err:
        line = str(hub_error(err, "publish to", target, token))
        raise HubError(f"{line} (the data was pushed in commit {data_commit[:10]}, the card and artifacts "
                             "were not: run publish again)") from None
    return Published(repo_id, config_name, data_commit, card_commit, ["README.md", *files], revision, list(deleted))


def _public_file(local: Path, rel: str, paths: LocalPaths) -> Path | bytes:
    """A text artifact with local paths replaced (recipe, history, audit report); other files as they are."""
    if rel in (RECIPE_FILE,):
        import yaml

        return yaml.safe_dump(paths.data(yaml.safe_load(local.read_text()) or {}), sort_keys=False).encode()
    if rel.endswith(".json"):
        return jsonio.dumps(paths.data(json.loads(local.read_text())), indent=2 if rel.startswith("audit/") else None,
                          default=str).encode()
    return local


def _same_set(hub_text: str | None, ours: dict, config: str, where: str) -> bool:
    """Whether the repo's entry for ``config`` describes the set we publish (same provenance and size)."""
    meta = split_card(hub_text, where)[0].get("distilkit")
    if config not in config_names(meta):
        return False
    theirs = config_entry(meta, config)
    return all(theirs.get(key) == ours.get(key) for key in ("method", "ipc", "num_images", "provenance"))


def _with_local_sections(ours: str, local_card: str) -> str:
    """Our rendered card with the audit section of the local card (rendering only knows evaluation)."""
    from distilkit.card import replace_section
    from distilkit.hub.merge import extract_section

    section = extract_section(local_card, "audit")
    return replace_section(ours, "audit", section) if section else ours


def push_audit(view: Path, ref: HubRef, parent: str, token: str | None, ran: list[str] | None = None,
               render: Callable[[dict], tuple[dict, str]] | None = None) -> str:
    """Commit the audits ``ran`` on the view (default: all in its report) to the repo: their entries
    merged into the repo's ``audit/report.json``, their figures and artifacts, and the card's audit
    summaries and section, rendered by ``render(report) -> (summaries, section)`` from the merged report
    (default: taken from the view's card). Race-safe on ``parent``: on HTTP 412 the card and the report
    are read again at the new head and merged again. Returns the new commit sha."""
    from huggingface_hub import HfApi

    from distilkit.hub.merge import extract_section

    token = resolve_token(token)
    config = ref.config or DEFAULT_CONFIG
    target = str(ref)
    report_file = view / REPORT_PATH
    view_report = json.loads(report_file.read_text()) if report_file.is_file() else {"audits": {}}
    ran = [name for name in (ran or list(view_report.get("audits", {}))) if name in view_report.get("audits", {})]
    prefix = repo_prefix(config)
    own = {rel for name in ran for rel in [*view_report["audits"][name].get("figures", []),
                                            *view_report["audits"][name].get("artifacts", [])]}
    files: dict[str, Path | bytes] = {prefix + rel: view / rel for rel in sorted(own) if (view / rel).is_file()}
    api = HfApi(token=token)

    def build(hub_text: str | None, parent: str) -> CardCommit:
        raw = read_hub_file(api, ref.repo_id, prefix + REPORT_PATH, parent)
        try:
            hub_report = json.loads(raw) if raw else {}
        except ValueError:
            hub_report = {}  # a corrupt report on the Hub is replaced by ours
        audits = dict(hub_report.get("audits") or {}) if isinstance(hub_report, dict) else {}
        audits.update({name: view_report["audits"][name] for name in ran})
        report = {**view_report, "set": target, "audits": audits}
        source = report.get("source")
        if isinstance(source, str) and _is_local_path(source):  # `--source PATH` stays on this machine
            report["source"] = f"local:{_base_name(source)}"
        if render is not None:
            summaries, section = render(report)
        else:
            view_data, view_body = split_card((view / "README.md").read_text(encoding="utf-8"), "the audited set")
            summaries = (view_data.get("distilkit") or {}).get("audits") or {}
            section = extract_section(view_body, "audit") or ""
        card = merge_audit(hub_text or "", summaries, section, config, target)
        return CardCommit(card, {**files, prefix + REPORT_PATH: jsonio.dumps(report, indent=2, default=str).encode()})

    with hub_call("push the audit to", target, token):
        return commit_card(api, ref.repo_id, ref.revision, parent, build, f"distilkit: audit results ({config})")
