"""Dataset cards for distilled sets: YAML metadata + a Jinja2-rendered body with marked sections.

The YAML holds the standard Hub keys (licence inherited from the source, task, size, source
datasets, tags) plus one namespaced ``distilkit:`` key with the machine-readable facts. Sections
that commands rewrite (evaluation, audits) sit between ``<!-- distilkit:NAME:start -->`` and
``<!-- distilkit:NAME:end -->``; updates replace only what is between the markers.

The card is part of the set format: like :mod:`distilkit.distilled` it imports no method, audit or
Hub code. Only rendering consults the method registry, for a registered method's summary and
citation; a set made by any other method, or imported from another toolkit, renders and saves.
The body template comes from the top-level ``cards/`` folder (installed as ``distilkit/cards``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from distilkit.errors import DistilkitError
from distilkit.outputs import write_atomic

if TYPE_CHECKING:
    from distilkit.distilled import DistilledSet

CARD_TEMPLATE = "distilled_card.md.j2"
DATA_CONFIGS = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
TAGS = ["dataset-distillation", "synthetic", "distilkit"]
CITATIONS = {
    "study": "@inproceedings{yang2024what,\n  title={What is Dataset Distillation Learning?},\n"
             "  author={Yang, William and Zhu, Ye and Deng, Zhiwei and Russakovsky, Olga},\n"
             "  booktitle={ICML}, year={2024}\n}",
    "fashion_mnist": "@article{xiao2017fashion,\n  title={Fashion-MNIST: a Novel Image Dataset for "
                     "Benchmarking Machine Learning Algorithms},\n  author={Xiao, Han and Rasul, Kashif "
                     "and Vollgraf, Roland},\n  journal={arXiv:1708.07747}, year={2017}\n}",
}


def templates_dir() -> Path:
    """The folder holding the card templates: ``distilkit/cards`` in an installed wheel (the top-level
    ``cards/`` folder, shipped as package ``distilkit.cards``), else ``cards/`` beside the package in a
    source checkout or an editable install. Found from this file, not through the import system, so a
    checkout on ``PYTHONPATH`` uses its own templates even where another copy of distilkit is installed."""
    package = Path(__file__).resolve().parent
    for folder in (package / "cards", package.parent / "cards"):
        if (folder / CARD_TEMPLATE).is_file():
            return folder
    raise DistilkitError(f"the card template {CARD_TEMPLATE} is missing (looked in {package / 'cards'} and "
                         f"{package.parent / 'cards'}); reinstall distilkit")


def method_description(name: str) -> tuple[str, str | None]:
    """(summary, citation) of method ``name`` from the method registry, looked up only when a card is
    rendered; a name the registry does not know (a method defined elsewhere) gets a plain summary."""
    from distilkit.methods import get_method

    try:
        spec = get_method(name)
    except DistilkitError:
        return "a method not registered in distilkit", None
    return spec.summary, spec.citation or None


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return name
    return "100K<n<1M"


SCORE_KEYS = ("ior", "hlr", "lrs", "ars")


def _pool_means(results: list[dict]) -> list[tuple[str, list[dict]]]:
    """(preset, results) for each preset evaluated with more than one model (a cross-architecture pool)."""
    presets: dict[str, list[dict]] = {}
    for r in results:
        presets.setdefault(str(r.get("preset")), []).append(r)
    return [(p, rs) for p, rs in presets.items() if len({r.get("model") for r in rs}) > 1]


def evaluation_markdown(results: list[dict]) -> str:
    if not results:
        return "Not evaluated yet: run `distilkit evaluate <this set> --runs 5`."
    lines = ["| model | protocol | runs | test accuracy (mean ± std) | real test set | trained with |",
             "|---|---|---|---|---|---|"]
    for r in results:
        trained = f"{r['labels']} labels, lr {r['lr']:.4g}" if "labels" in r and r.get("lr") else ""
        lines.append(f"| `{r['model']}` | {r['preset']} | {r['runs']} | "
                     f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} % | {r.get('test_set', '')} | {trained} |")
    for preset, rs in _pool_means(results):
        mean = sum(r["mean"] for r in rs) / len(rs)
        lines.append(f"| mean of {len(rs)} models | {preset} | | {100 * mean:.2f} % | | |")
    lines.append("")
    lines.append("Each run trains a freshly initialised model on the distilled set only and reports its final "
                 "accuracy on the real test split (no model selection on test).")
    scored = [r for r in results if isinstance(r.get("scores"), dict)]
    if scored:
        lines += ["", "Fair scores (DD-Ranking's construction, validation-clean; ×100, accuracies as fractions):", "",
                  "| model | protocol | IOR | HLR | LRS | ARS | set / random / full-real accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for r in scored:
            sc, acc = r["scores"], r["scores"].get("accuracies", {})
            cells = " | ".join(f"{100 * sc[k]['mean']:.2f} ± {100 * sc[k]['std']:.2f}" for k in SCORE_KEYS)
            accs = " / ".join(f"{100 * acc.get(k, float('nan')):.2f}" for k in ("set", "random", "full_real"))
            lines.append(f"| `{r['model']}` | {r['preset']} | {cells} | {accs} % |")
        for preset, rs in _pool_means(scored):
            cells = " | ".join(f"{100 * sum(r['scores'][k]['mean'] for r in rs) / len(rs):.2f}"
                               for k in SCORE_KEYS)
            lines.append(f"| mean of {len(rs)} models | {preset} | {cells} | |")
        lines += ["", "IOR = acc(set) − acc(random real subset, same per-class counts and protocol); "
                  "HLR = acc(full real data) − acc(set, hard labels); LRS = (e^α − e^−1)/(e − e^−1), "
                  "α = ½·IOR − ½·HLR; ARS the same squashing of ½·IOR(with augmentation) + ½·IOR(without). "
                  "Final-epoch accuracies, fixed learning "
                  "rates: nothing is selected on the test split."]
    return "\n".join(lines)


def render_card(dset: DistilledSet, repo_ref: str, config_name: str | None = None, cli_ref: str | None = None) -> str:
    """The full README.md text for ``dset``; ``repo_ref`` (and ``config_name``, for a set published
    as a named config) is what the snippet passes to load_dataset, ``cli_ref`` what the distilkit
    commands in the card take (default ``repo_ref``)."""
    from huggingface_hub import DatasetCardData

    imported = (dset.provenance or {}).get("imported")
    if imported:  # made outside distilkit: any method name, no registered summary or citation
        summary, citation = (f"made outside distilkit, imported from a {imported.get('format')} file", None)
    else:
        summary, citation = method_description(dset.method)
    source = dset.source
    c, h, w = (int(s) for s in dset.images.shape[1:])
    feat_hw = (h // 4) * (w // 4)  # the snippet's two stride-2 poolings
    hub_ids = [source["hub_id"]] if source.get("hub_id") else []
    data = DatasetCardData(
        license=source.get("license") or "other",
        pretty_name=f"{source.get('pretty_name') or source.get('id')} distilled ({dset.method}, IPC {dset.ipc})",
        task_categories=["image-classification"],
        task_ids=["multi-class-image-classification"],
        size_categories=[_size_category(int(dset.images.shape[0]))],
        source_datasets=hub_ids or None,
        tags=list(TAGS),
        configs=DATA_CONFIGS,
        distilkit=dset.card_metadata(),
    )
    citations = [CITATIONS["study"]]
    if citation:
        citations.insert(0, citation if citation.startswith("@") else f"% {citation}")
    if "fashion" in str(source.get("id", "")).lower():
        citations.append(CITATIONS["fashion_mnist"])
    test = source.get("test", {})
    env = Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    body = env.get_template(CARD_TEMPLATE).render(
        title=data.pretty_name, num_images=int(dset.images.shape[0]), ipc=dset.ipc, num_classes=dset.num_classes,
        shape=f"{c}×{h}×{w}", shape_n=f"[{int(dset.images.shape[0])}, {c}, {h}, {w}]", method=dset.method,
        method_summary=summary, imported=imported or None, source_id=source.get("id"), source_split=source.get("split"),
        source_revision=source.get("revision"), pixel_space=dset.pixel_space.kind,
        mean=[round(m, 4) for m in dset.pixel_space.mean], std=[round(s, 4) for s in dset.pixel_space.std],
        label_kind="soft (`soft_label`, probabilities) and hard (`label`)" if dset.soft_labels is not None
        else "hard (`label`, ClassLabel)", learned_lr=dset.learned_lr, repo_ref=repo_ref,
        config_name=config_name if config_name not in (None, "default") else None, cli_ref=cli_ref or repo_ref,
        target_column="soft_label" if dset.soft_labels is not None else "label",
        target_desc="float32 probabilities" if dset.soft_labels is not None else "int64 class ids",
        channels=c, feat_hw=feat_hw, train_lr=dset.learned_lr or 0.01,
        evaluation_section=evaluation_markdown(dset.evaluation),
        test_desc=f"split `{test.get('split')}`" + (" (a seeded, stratified hold-out carved from train)"
                                                   if test.get("carved") else ""),
        seed=dset.provenance.get("seed"), version=dset.provenance.get("distilkit_version"),
        wall_time=dset.provenance.get("wall_time_s"), hardware=dset.provenance.get("hardware"),
        license=source.get("license") or "unknown",
        source_attribution="Fashion-MNIST is © 2017 Zalando SE, MIT licence."
        if "fashion" in str(source.get("id", "")).lower() else "",
        citations="\n".join(citations),
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def read_card(folder: Path):
    """Load ``folder/README.md`` as a DatasetCard; a missing or unparsable card is a clear error."""
    from huggingface_hub import DatasetCard

    readme = Path(folder) / "README.md"
    if not readme.is_file():
        raise DistilkitError(f"{folder} has no README.md: not a distilkit set")
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise DistilkitError(f"{readme} has no YAML metadata block: not a distilkit set")
    try:
        return DatasetCard(text)
    except Exception as err:  # yaml.YAMLError, ValueError from the card parser
        raise DistilkitError(f"{readme} has corrupt YAML metadata: {str(err).splitlines()[0]}") from err


def replace_section(text: str, name: str, content: str) -> str:
    """Replace the body between this section's markers (append the section if it is missing)."""
    start, end = f"<!-- distilkit:{name}:start -->", f"<!-- distilkit:{name}:end -->"
    block = f"{start}\n{content.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def update_card_evaluation(folder: Path, results: list[dict]) -> None:
    """Write evaluation results into the card's YAML and its evaluation section, atomically."""
    card = read_card(folder)
    meta = card.data.get("distilkit")
    if not isinstance(meta, dict):
        raise DistilkitError(f"{folder} is not a distilkit set")
    meta["evaluation"] = results
    card.data["distilkit"] = meta
    card.text = replace_section(card.text, "eval", evaluation_markdown(results))
    write_atomic(Path(folder) / "README.md", str(card))
