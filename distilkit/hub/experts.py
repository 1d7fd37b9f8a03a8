"""Expert trajectories on the Hub: push a local experts folder, fetch ``hf://`` references before a run.

Methods only ever read local files (:mod:`distilkit.experts`). A run that names experts on the Hub
(``--arg experts=hf://<owner>/<name>[@revision]``) has them fetched here first, by
:func:`fetch_hub_inputs`, which the pipeline calls once the method's options are resolved: the
repo is downloaded once per commit into the Hub cache and the option is replaced by that folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distilkit.errors import ConfigError
from distilkit.experts import INDEX_FILE, Experts
from distilkit.hub.repo import HubRef, download, hub_call, resolve_token

HUB_PREFIX = "hf://"


def push_experts(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload an experts folder as a Hub dataset repo (index + safetensors only); returns the commit sha."""
    from huggingface_hub import HfApi

    experts = Experts.load(Path(folder))
    token = resolve_token(token)
    with hub_call("write", repo_id, token):
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        info = api.upload_folder(folder_path=str(experts.folder), repo_id=repo_id, repo_type="dataset",
                                 allow_patterns=[INDEX_FILE, "expert-*.safetensors"],
                                 commit_message=f"distilkit experts {experts.index['key']} "
                                                f"({experts.num_experts} x {experts.model}, {experts.epochs} epochs)")
    return info.oid


def parse_experts_ref(ref: str) -> HubRef:
    """``hf://[datasets/]<owner>/<name>[@revision]`` -> the dataset repo (and revision) it names."""
    spec = ref[len(HUB_PREFIX):]
    spec = spec[len("datasets/"):] if spec.startswith("datasets/") else spec
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"expected hf://<owner>/<name>[@revision], got {ref!r}")
    return HubRef(repo_id=repo_id, revision=revision or None)


def fetch_experts(ref: str, token: str | None = None, accelerator=None) -> Path:
    """The local folder of the experts repo ``ref`` (``hf://...``), downloaded into the Hub cache once per
    commit; with an ``accelerator`` only the main process downloads and the others read its copy."""
    hub_ref = parse_experts_ref(ref)
    token = resolve_token(token)
    if accelerator is None:
        folder, _ = download(hub_ref, token)
    else:
        with accelerator.main_process_first():
            folder, _ = download(hub_ref, token, local_only=not accelerator.is_main_process)
    return folder


# Method options that may name a Hub repo, and how each is fetched to a local folder.
HUB_INPUTS: dict[str, Callable[..., Path]] = {"experts": fetch_experts}


def fetch_hub_inputs(method_cfg: dict[str, Any], token: str | None = None, accelerator=None) -> dict[str, Any]:
    """``method_cfg`` with every option of :data:`HUB_INPUTS` that names a Hub repo (``hf://...``) replaced
    by the local folder it was fetched to, so that the method itself never talks to the Hub. The given dict
    is left as it is (it is what the run records, with the ``hf://`` reference)."""
    return {key: str(HUB_INPUTS[key](value, token, accelerator))
            if key in HUB_INPUTS and isinstance(value, str) and value.startswith(HUB_PREFIX) else value
            for key, value in method_cfg.items()}
