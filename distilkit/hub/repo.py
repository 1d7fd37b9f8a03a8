"""Hub dataset repos as SET arguments: parse, authenticate, download, and map errors to one line.

A SET argument is a local folder when one exists at that path; otherwise ``hf://datasets/<id>``,
``hf://datasets/<id>@<revision>``, ``hf://datasets/<id>[@<revision>]/<config>`` or a bare ``<id>``
(``namespace/name``) names a dataset repo. A repo is downloaded once per commit into
``<cache>/hub/<namespace>--<name>/<commit sha>`` (temp folder + rename, so an interrupted
download is never trusted), and each use gets a fresh temporary *view* of one config laid out like a
local set folder, so commands that write into the set never touch the cache.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from distilkit.cache import cache_dir
from distilkit.errors import ConfigError, DistilkitError, HubError
from distilkit.outputs import write_atomic
from distilkit.validation import env_number

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HF_URI = re.compile(r"hf://datasets/(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?(?:/(?P<config>[^/]+))?/?")
DEFAULT_CONFIG = "default"
HUB_TIMEOUT_ENV = "DISTILKIT_HUB_TIMEOUT"
HUB_RETRIES_ENV = "DISTILKIT_HUB_RETRIES"
DEFAULT_HUB_TIMEOUT = 60.0
DEFAULT_HUB_RETRIES = 3


@dataclass(frozen=True)
class HubRef:
    """A dataset repo (and optionally a revision and a config) named on the command line."""

    repo_id: str
    revision: str | None = None
    config: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        config = f"/{self.config}" if self.config and self.config != DEFAULT_CONFIG else ""
        return f"hf://datasets/{self.repo_id}{rev}{config}"


@dataclass
class OpenedSet:
    """What a SET argument resolved to: a folder laid out like a local set, and its origin."""

    folder: Path
    hub: HubRef | None = None
    commit: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.hub is not None


def parse_set_ref(arg: str) -> HubRef | None:
    """The repo named by ``arg``, or None when ``arg`` is (or can only be) a local folder."""
    if arg.startswith("hf://"):
        match = HF_URI.fullmatch(arg)
        if match is None:
            raise ConfigError(f"{arg!r} is not a dataset repo URI; use hf://datasets/<namespace>/<name>"
                              "[@<revision>][/<config>]")
        return HubRef(match["repo"], match["rev"], match["config"])
    if Path(arg).exists() or not REPO_ID.fullmatch(arg):
        return None
    return HubRef(arg)


def resolve_token(token: str | None) -> str | None:
    """``--token``, else ``HF_TOKEN``, else the huggingface_hub login (None: anonymous)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def hub_timeout() -> float:
    """Seconds a Hub request may wait for the server (connect, each read, each write):
    ``DISTILKIT_HUB_TIMEOUT``, default 60."""
    return env_number(HUB_TIMEOUT_ENV, DEFAULT_HUB_TIMEOUT, minimum=0.001)


def hub_retries() -> int:
    """How often a Hub read that timed out or lost its connection is tried again (``DISTILKIT_HUB_RETRIES``,
    default 3; waits 0.5, 1, 2 ... s in between). Commits are not repeated: their parent_commit guard
    answers a repeated commit with HTTP 412 and the card merge retries it instead."""
    return int(env_number(HUB_RETRIES_ENV, DEFAULT_HUB_RETRIES, kind=int))


def configure_hub_http() -> None:
    """Give every huggingface_hub (and datasets) request a timeout. Process-wide: called by the CLI
    entry point only. huggingface_hub's client has no timeout and several of its calls pass
    ``timeout=None`` (wait forever) per request, so a request hook fills each unset timeout in."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    seconds = hub_timeout()

    def bound(request) -> None:
        timeouts = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {key: timeouts.get(key) or seconds
                                         for key in ("connect", "read", "write", "pool")}

    def factory():
        client = _http.default_client_factory()
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks.get("request", []), bound]}
        return client

    huggingface_hub.set_client_factory(factory)


def with_retries(call: Callable[[], object]):
    """``call()``, tried again with exponential backoff when the connection times out or drops."""
    import httpx2

    retries = hub_retries()
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return call()
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError):
            if attempt == retries:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 8.0)


def hub_error(err: BaseException, action: str, target: str, token: str | None) -> HubError:
    """One clear line for a failed Hub call; the token never appears in it."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cause = err
    while isinstance(cause, RuntimeError) and cause.__cause__ is not None:  # LFS upload wraps the real error
        cause = cause.__cause__
    status = getattr(getattr(cause, "response", None), "status_code", None)
    if isinstance(cause, OfflineModeIsEnabled):
        message = f"cannot {action} {target}: offline mode is on (HF_HUB_OFFLINE=1)"
    elif isinstance(cause, RevisionNotFoundError):
        message = f"cannot {action} {target}: revision not found"
    elif isinstance(cause, RemoteEntryNotFoundError):
        message = f"cannot {action} {target}: a file it needs is missing in the repo"
    elif isinstance(cause, RepositoryNotFoundError):
        message = (f"cannot {action} {target}: dataset repo not found, or not visible with your credentials "
                   f"(HTTP {status}); check the id, pass --token, set HF_TOKEN or run `hf auth login`")
    elif isinstance(cause, HfHubHTTPError) and status == 401:
        message = (f"cannot {action} {target}: not authenticated (HTTP 401); pass --token, set HF_TOKEN or run "
                   "`hf auth login`")
    elif isinstance(cause, HfHubHTTPError) and status == 403:
        message = f"cannot {action} {target}: permission denied (HTTP 403); the token needs write access to the repo"
    elif isinstance(cause, HfHubHTTPError):
        detail = getattr(cause, "server_message", None) or str(cause).strip().splitlines()[0]
        message = f"cannot {action} {target}: the Hub answered HTTP {status} ({detail})"
    elif isinstance(cause, (httpx2.TimeoutException, TimeoutError)):
        message = (f"cannot {action} {target}: the Hub did not answer within {hub_timeout():g} s "
                   f"({type(cause).__name__}, after {hub_retries() + 1} attempts for reads); check the network, "
                   f"or raise {HUB_TIMEOUT_ENV}")
    elif isinstance(cause, (httpx2.TransportError, ConnectionError)):
        message = f"cannot {action} {target}: network failure ({type(cause).__name__}: {_first_line(cause)})"
    else:
        message = f"cannot {action} {target}: {type(cause).__name__}: {_first_line(cause)}"
    return HubError(scrub(message, token))


def scrub(text: str, token: str | None) -> str:
    """``text`` with the token (if any) replaced by ``***``."""
    return text.replace(token, "***") if token else text


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def hub_call(action: str, target: str, token: str | None) -> Iterator[None]:
    """Turn any Hub/network failure inside the block into a one-line :class:`HubError` (our own errors keep
    their class; the token is scrubbed from every message)."""
    try:
        yield
    except DistilkitError as err:
        raise type(err)(scrub(str(err), token)) from None
    except Exception as err:  # huggingface_hub, httpx2 and datasets raise many types
        raise hub_error(err, action, target, token) from None


def hub_cache_dir() -> Path:
    return cache_dir() / "hub"


def download(ref: HubRef, token: str | None, local_only: bool = False) -> tuple[Path, str]:
    """The repo's files at ``ref.revision`` in the cache (downloaded if needed) and the commit sha.

    With ``local_only`` (non-main processes) nothing is fetched: the sha the main process resolved
    is read from ``refs/<revision>`` in the cache."""
    from huggingface_hub import HfApi, snapshot_download

    repo_dir = hub_cache_dir() / ref.repo_id.replace("/", "--")
    ref_file = repo_dir / "refs" / (ref.revision or "main").replace("/", "--")
    target = str(ref)
    if local_only:
        if not ref_file.is_file():
            raise HubError(f"{target} has not been downloaded by the main process")
        sha = ref_file.read_text().strip()
        return repo_dir / sha, sha
    with hub_call("read", target, token):
        sha = with_retries(lambda: HfApi(token=token).repo_info(ref.repo_id, repo_type="dataset",
                                                                revision=ref.revision).sha)
        final = repo_dir / sha
        if not final.is_dir():
            repo_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.tmp-", dir=repo_dir))
            try:
                with_retries(lambda: snapshot_download(ref.repo_id, repo_type="dataset", revision=sha,
                                                       local_dir=tmp, token=token))
                shutil.rmtree(tmp / ".cache", ignore_errors=True)
                try:
                    tmp.rename(final)
                except OSError:  # another process finished the same download first
                    shutil.rmtree(tmp, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(ref_file, sha)
    return final, sha


def build_view(snapshot: Path, ref: HubRef, dest: Path) -> str:
    """Lay out config ``ref.config`` of a downloaded repo in ``dest`` like a local set folder
    (``data/train-00000-of-00001.parquet``, README with that config's ``distilkit`` entry, artifacts);
    returns the config name."""
    import pyarrow.parquet as pq

    from distilkit.card import read_card
    from distilkit.distilled import DATA_FILE
    from distilkit.hub.merge import config_entry, config_names, extract_config_body, repo_prefix

    card = read_card(snapshot)
    meta = card.data.get("distilkit")
    names = config_names(meta)
    if not names:
        raise HubError(f"{ref} is not a distilkit set (its card has no 'distilkit' entry)")
    config = ref.config or (DEFAULT_CONFIG if DEFAULT_CONFIG in names or len(names) != 1 else names[0])
    if config not in names:
        choices = ", ".join(str(HubRef(ref.repo_id, ref.revision, n)) for n in names)
        raise HubError(f"{ref} has no distilkit set for config {config!r}; choose one of: {choices}")
    prefix = repo_prefix(config)
    shards = sorted(p for p in _files(snapshot) if fnmatch(p, _data_pattern(card.data.get("configs"), config)))
    if not shards:
        raise HubError(f"{ref}: no data files for config {config!r}")
    (dest / "data").mkdir(parents=True)
    if len(shards) == 1:
        shutil.copyfile(snapshot / shards[0], dest / DATA_FILE)
    else:
        import pyarrow as pa

        tables = [pq.read_table(snapshot / s) for s in shards]
        pq.write_table(pa.concat_tables(tables), dest / DATA_FILE)
    for path in _files(snapshot):
        if prefix and not path.startswith(prefix):
            continue
        rel = path[len(prefix):]
        top = rel.split("/")[0]
        if top in ("preview.png", "zca.safetensors", "distilkit_recipe.yaml", "distilkit_history.json", "audit") \
                and (top != "audit" or "/" in rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snapshot / path, dest / rel)
    data = card.data.to_dict()
    data["distilkit"] = config_entry(meta, config)
    data.pop("configs", None)
    data.pop("dataset_info", None)
    import yaml

    text = f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n\n" \
           f"{extract_config_body(card.text, config)}"
    (dest / "README.md").write_text(text, encoding="utf-8")
    return config


def _files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def _data_pattern(configs, config: str) -> str:
    """The train-split data pattern the card's ``configs`` gives ``config`` (datasets' default otherwise)."""
    fallback = "data/train-*" if config == DEFAULT_CONFIG else f"{config}/train-*"
    for item in configs or []:
        if isinstance(item, dict) and item.get("config_name") == config:
            files = item.get("data_files")
            if isinstance(files, str):
                return files
            for entry in files or []:
                if isinstance(entry, dict) and entry.get("split") == "train":
                    path = entry.get("path")
                    path = path[0] if isinstance(path, list) and path else path
                    if isinstance(path, str):
                        return path if any(c in path for c in "*?[") else f"{path.rstrip('/')}/*"
    return fallback


@contextlib.contextmanager
def open_set(arg: str, token: str | None = None, accelerator=None) -> Iterator[OpenedSet]:
    """Resolve a SET argument. Local folders are used in place; a repo is downloaded (cached per
    commit) and a temporary view of its config is yielded and removed afterwards. With an
    ``accelerator``, only the main process talks to the Hub; the others read what it cached."""
    ref = parse_set_ref(arg)
    if ref is None:
        yield OpenedSet(Path(arg))
        return
    token = resolve_token(token)
    if accelerator is None:
        snapshot, sha = download(ref, token)
    else:
        with accelerator.main_process_first():
            snapshot, sha = download(ref, token, local_only=not accelerator.is_main_process)
    view_root = Path(tempfile.mkdtemp(prefix="distilkit-view-"))
    try:
        view = view_root / "set"
        config = build_view(snapshot, ref, view)
        yield OpenedSet(view, HubRef(ref.repo_id, ref.revision, config), sha)
    finally:
        shutil.rmtree(view_root, ignore_errors=True)
