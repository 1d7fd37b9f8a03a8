"""Several distilled sets in one repo, and merging our card into the card already on the Hub.

A repo holds one set per dataset config. The ``default`` config is laid out like a local folder
(``data/``, ``preview.png``, ``audit/`` ... at the root) and its facts are the ``distilkit:`` entry
itself; a named config ``C`` keeps its data and artifacts under ``C/`` and its facts under
``distilkit.configs.C``. In the card body each set is one block between
``<!-- distilkit:set[:C]:start -->`` and ``<!-- distilkit:set[:C]:end -->`` whose inner sections carry
the same suffix (``distilkit:audit:C``), so updating one set never touches another set's text or
anything written outside the blocks.
"""

from __future__ import annotations

import re

import yaml

from distilkit.card import replace_section
from distilkit.errors import HubError

DEFAULT_CONFIG = "default"
MARKER = re.compile(r"<!-- distilkit:(?P<name>[\w-]+)(?::(?P<config>[\w.-]+))?:(?P<edge>start|end) -->")
MERGED_LIST_KEYS = ("tags", "task_categories", "task_ids", "size_categories", "source_datasets")
HUB_OWNED_KEYS = ("configs", "dataset_info", "distilkit")
YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")  # as huggingface_hub


def repo_prefix(config: str) -> str:
    """Where a config's artifacts live in the repo ("" for the default config)."""
    return "" if config == DEFAULT_CONFIG else f"{config}/"


def section_name(name: str, config: str) -> str:
    return name if config == DEFAULT_CONFIG else f"{name}:{config}"


def config_names(meta) -> list[str]:
    """The configs that have a distilkit entry (``default`` first)."""
    if not isinstance(meta, dict):
        return []
    names = [DEFAULT_CONFIG] if "method" in meta else []
    configs = meta.get("configs")
    return names + (sorted(configs) if isinstance(configs, dict) else [])


def config_entry(meta: dict, config: str) -> dict:
    if config == DEFAULT_CONFIG:
        return {k: v for k, v in meta.items() if k != "configs"}
    return dict(meta["configs"][config])


def set_config_entry(meta, config: str, entry: dict) -> dict:
    """``meta`` with ``config``'s entry replaced by ``entry`` (other configs kept)."""
    meta = dict(meta) if isinstance(meta, dict) else {}
    if config == DEFAULT_CONFIG:
        others = meta.get("configs")
        meta = dict(entry)
        if others:
            meta["configs"] = others
    else:
        meta["configs"] = {**(meta.get("configs") or {}), config: entry}
    return meta


def suffix_markers(text: str, config: str) -> str:
    """Give every distilkit marker in ``text`` the config suffix (no-op for the default config)."""
    if config == DEFAULT_CONFIG:
        return text
    return MARKER.sub(lambda m: f"<!-- distilkit:{m['name']}:{config}:{m['edge']} -->", text)


def extract_config_body(text: str, config: str) -> str:
    """The body of ``config``'s block with plain markers (as in a local folder); the whole text if
    the card has no blocks (a card written by hand, or a set published by an older distilkit)."""
    start, end = (f"<!-- distilkit:{section_name('set', config)}:{edge} -->" for edge in ("start", "end"))
    if start not in text or end not in text:
        return text
    block = text.split(start, 1)[1].split(end, 1)[0]
    if config == DEFAULT_CONFIG:
        return block.strip() + "\n"
    return MARKER.sub(lambda m: f"<!-- distilkit:{m['name']}:{m['edge']} -->" if m["config"] == config else m[0],
                      block).strip() + "\n"


def extract_section(text: str, name: str) -> str | None:
    start, end = f"<!-- distilkit:{name}:start -->", f"<!-- distilkit:{name}:end -->"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def prefix_links(text: str, config: str) -> str:
    """Point relative links to the config's artifacts (``preview.png``, ``audit/...``) under ``C/``."""
    prefix = repo_prefix(config)
    if not prefix:
        return text
    return re.sub(r"\]\((preview\.png|audit/[^)]*)\)", lambda m: f"]({prefix}{m[1]})", text)


def split_card(text: str | None, where: str) -> tuple[dict, str]:
    """YAML metadata and body of a card text; invalid YAML is a clear error."""
    if not text:
        return {}, ""
    match = YAML_BLOCK.search(text)
    if match is None:
        return {}, text
    head, body = match.group(2), text[match.end():]
    try:
        data = yaml.safe_load(head) or {}
    except yaml.YAMLError as err:
        raise HubError(f"the card of {where} is not valid YAML ({str(err).splitlines()[0]}); fix README.md "
                       "on the Hub first") from None
    if not isinstance(data, dict):
        raise HubError(f"the card of {where} has YAML metadata that is not a mapping; fix README.md first")
    return data, body


def join_card(data: dict, body: str) -> str:
    return f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n\n{body.lstrip()}"


def merge_card(hub_text: str | None, ours: str, config: str, where: str) -> str:
    """Our card for ``config`` merged into the card on the Hub.

    YAML: the Hub's keys win (``configs``/``dataset_info`` are written by ``push_to_hub``), ours are
    added where missing, list keys such as ``tags`` are united, and this config's ``distilkit``
    entry is replaced. Body: this config's block is replaced (or appended); text outside it stays."""
    hub_data, hub_body = split_card(hub_text, where)
    our_data, our_body = split_card(ours, "our card")
    data = dict(hub_data)
    for key, value in our_data.items():
        if key in HUB_OWNED_KEYS:
            continue
        if key not in data or data[key] in (None, "", []):
            data[key] = value
        elif key in MERGED_LIST_KEYS and isinstance(data[key], list) and isinstance(value, list):
            data[key] = data[key] + [v for v in value if v not in data[key]]
    data["distilkit"] = set_config_entry(hub_data.get("distilkit"), config, our_data["distilkit"])
    block = prefix_links(suffix_markers(our_body.strip(), config), config)
    body = replace_section(hub_body, section_name("set", config), block) if hub_body.strip() else \
        replace_section("", section_name("set", config), block).lstrip()
    return join_card(data, body)


def merge_audit(hub_text: str, audits: dict, section: str, config: str, where: str) -> str:
    """The Hub card with ``config``'s audit summaries (``distilkit.audits``) and audit section replaced."""
    hub_data, hub_body = split_card(hub_text, where)
    meta = hub_data.get("distilkit")
    if config not in config_names(meta):
        raise HubError(f"{where} no longer has a distilkit set for config {config!r}")
    entry = config_entry(meta, config)
    entry["audits"] = audits
    hub_data["distilkit"] = set_config_entry(meta, config, entry)
    hub_body = replace_section(hub_body, section_name("audit", config), prefix_links(section, config))
    return join_card(hub_data, hub_body)


def carry_audit(new_text: str, old_text: str | None, config: str, where: str) -> str:
    """``new_text`` with ``config``'s audit summaries and audit section taken from ``old_text`` (both
    full repo cards; the section's links already point where the repo keeps the files)."""
    old_data, old_body = split_card(old_text, where)
    data, body = split_card(new_text, where)
    old_meta = old_data.get("distilkit")
    audits = config_entry(old_meta, config).get("audits") if config in config_names(old_meta) else None
    section = extract_section(old_body, section_name("audit", config))
    if not audits and section is None:
        return new_text
    entry = config_entry(data["distilkit"], config)
    entry["audits"] = audits or {}
    data["distilkit"] = set_config_entry(data["distilkit"], config, entry)
    if section is not None:
        body = replace_section(body, section_name("audit", config), section)
    return join_card(data, body)
