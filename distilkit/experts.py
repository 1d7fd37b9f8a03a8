"""Expert trajectories for trajectory matching (MTT): train once, store, find again, share.

An *expert* is a ConvNet trained on the real train split with the MTT recipe (SGD lr 0.01, no
momentum, no weight decay, DSA, batch 256; REFERENCE.md §3); its parameters are recorded at the
start and after every epoch. A set of experts lives in one folder::

    <root>/<key>/index.json                 what was trained, how, and the file of each expert
    <root>/<key>/expert-000.safetensors     tensors "epoch-<e>/<param name>" for e = 0..epochs

``key`` hashes (the train split's content hash, the pixel space, the model, the training config
except the number of experts), so asking for the same experts again (or fewer) finds them and
nothing is retrained, and a different source or recipe never does; asking for more trains only the
missing ones. The default root is ``<cache>/experts`` (:func:`distilkit.cache.cache_dir`).
Experts are dealt across Accelerate processes (expert i on rank i mod world); each rank writes its
own expert files atomically, and only the main process writes ``index.json``, after all ranks are
done. A folder is complete when its index lists every expert; a partly trained folder (a killed
run) is finished on the next call, reusing the experts that are already there.

Sharing lives with the Hub code (:mod:`distilkit.hub.experts`): it uploads a folder as a Hub dataset
repo (safetensors + JSON only) and fetches ``hf://<repo_id>[@revision]`` into a local folder before a
method runs; here experts are only ever local files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from distilkit import jsonio
from distilkit.cache import cache_dir
from distilkit.data.real import RealData
from distilkit.errors import ConfigError, DistilkitError
from distilkit.models import validate_model_name
from distilkit.outputs import atomic_path, write_atomic
from distilkit.presets import check_preset, check_preset_keys
from distilkit.seeding import seeded_model
from distilkit.train import TrainConfig, training_steps

INDEX_FILE = "index.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained. Defaults: the MTT buffer recipe (REFERENCE.md §3)."""

    model: str = "convnet"
    num_experts: int = 100
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    seed: int = 0

    def check(self) -> None:
        validate_model_name(self.model, "experts")
        if self.num_experts < 1:
            raise ConfigError(f"experts: num_experts must be >= 1, got {self.num_experts}")
        if self.epochs < 1:
            raise ConfigError(f"experts: epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0 or self.batch_size < 1:
            raise ConfigError("experts: lr must be > 0 and batch_size >= 1")

    def train_config(self) -> TrainConfig:
        return TrainConfig(model=self.model, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay, lr_schedule="constant",
                           dsa=self.dsa, use_learned_lr=False)


# The cpu and smoke recipes; a preset without an entry (standard, paper) trains MTT's own (ExpertConfig()).
EXPERT_PRESETS: dict[str, ExpertConfig] = {
    "cpu": ExpertConfig(model="convnet-w32", num_experts=3, epochs=12),
    "smoke": ExpertConfig(model="convnet-w8-d2", num_experts=2, epochs=2, batch_size=512),
}
check_preset_keys(EXPERT_PRESETS, "expert presets")


def expert_preset(name: str, **overrides) -> ExpertConfig:
    """The expert recipe of preset ``name`` with the non-None ``overrides`` applied."""
    check_preset(name)
    return replace(EXPERT_PRESETS.get(name, ExpertConfig()), **{k: v for k, v in overrides.items() if v is not None})


def experts_key(real: RealData, cfg: ExpertConfig) -> str:
    """Hash of (train split content + pixel space, model, training config): the experts' folder name.

    ``num_experts`` is not part of it: expert i depends only on (data, recipe, seed, i), so a set of
    N experts is the first N of any larger set, and asking for fewer reuses what is there."""
    recipe = {k: v for k, v in asdict(cfg).items() if k != "num_experts"}
    spec = {"real": real.fingerprint(), "config": recipe, "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Experts:
    """A complete set of expert trajectories on disk (see the module docstring for the layout)."""

    folder: Path
    index: dict

    @property
    def num_experts(self) -> int:
        return len(self.index["experts"])

    @property
    def epochs(self) -> int:
        return int(self.index["config"]["epochs"])

    @property
    def model(self) -> str:
        return str(self.index["config"]["model"])

    @property
    def param_names(self) -> list[str]:
        return list(self.index["param_names"])

    def trajectory(self, i: int) -> list[list[torch.Tensor]]:
        """Expert ``i``'s parameters at epochs 0..epochs, each a list in ``param_names`` order."""
        tensors = load_file(str(self.folder / self.index["experts"][i]["file"]))
        return [[tensors[f"epoch-{e}/{n}"] for n in self.param_names] for e in range(self.epochs + 1)]

    def first(self, n: int) -> Experts:
        """The first ``n`` experts of this set (the same folder; the index copy lists only them)."""
        index = {**self.index, "experts": self.index["experts"][:n],
                 "config": {**self.index["config"], "num_experts": min(n, self.num_experts)}}
        return Experts(self.folder, index)

    @classmethod
    def load(cls, folder: Path) -> Experts:
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise DistilkitError(f"{folder} holds no expert trajectories ({INDEX_FILE} missing)")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise DistilkitError(f"{index_path} is not valid JSON ({err.msg})") from None
        if index.get("format") != FORMAT_VERSION or "experts" not in index:
            raise DistilkitError(f"{index_path} is not a distilkit experts index (format {FORMAT_VERSION})")
        missing = [e["file"] for e in index["experts"] if not (folder / e["file"]).is_file()]
        if missing:
            raise DistilkitError(f"experts in {folder} are incomplete: missing {', '.join(missing[:3])}")
        return cls(folder, index)


def train_expert(real: RealData, cfg: ExpertConfig, i: int, device: torch.device | str = "cpu",
                 show_progress: bool = False) -> tuple[dict[str, torch.Tensor], list[str], float]:
    """Train expert ``i`` with the project's training loop; return its trajectory tensors, the
    parameter names and its real test accuracy. Initialisation and batches come from (seed, i)."""
    from distilkit.train import accuracy

    model = seeded_model(cfg.model, real, cfg.seed * 1_000_003 + i)
    names = [n for n, _ in model.named_parameters()]
    images = real.batch(torch.arange(real.train_images.shape[0]))
    protocol = cfg.train_config()
    per_epoch = -(-images.shape[0] // min(cfg.batch_size, images.shape[0]))
    generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + i) * 31 + 1)
    tensors: dict[str, torch.Tensor] = {}
    bar = tqdm(total=cfg.epochs, desc=f"expert {i}", disable=not show_progress, leave=False)
    for step in training_steps(model, images, real.train_labels, protocol, generator, device=device):
        if step % per_epoch == 0:
            epoch = step // per_epoch
            for name, p in model.named_parameters():
                tensors[f"epoch-{epoch}/{name}"] = p.detach().cpu().clone().contiguous()
            if epoch:
                bar.update(1)
    bar.close()
    test_images, test_labels = real.test_set()
    return tensors, names, accuracy(model, test_images, test_labels, device=device)


def ensure_experts(real: RealData, cfg: ExpertConfig, accelerator=None, root: Path | None = None,
                   show_progress: bool = True) -> Experts:
    """The experts for (real, cfg): found under ``root`` (default ``<cache>/experts``) or
    trained now, split across the accelerator's processes. Every process gets the complete set."""
    cfg.check()
    root = Path(root) if root is not None else cache_dir() / "experts"
    key = experts_key(real, cfg)
    folder = root / key
    if (folder / INDEX_FILE).is_file():
        found = Experts.load(folder)
        if found.num_experts >= cfg.num_experts:
            return found.first(cfg.num_experts)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    is_main = accelerator is None or accelerator.is_main_process
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    folder.mkdir(parents=True, exist_ok=True)
    mine = [i for i in range(cfg.num_experts) if i % world == rank]
    bar = tqdm(mine, desc=f"experts ({cfg.model}, {cfg.epochs} epochs)", disable=not (show_progress and is_main))
    for i in bar:
        path = folder / f"expert-{i:03d}.safetensors"
        if path.is_file():  # left by an interrupted run: same key, same seed, same trajectory
            continue
        tensors, _, acc = train_expert(real, cfg, i, device)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"distilkit": jsonio.dumps({"expert": i, "test_accuracy": acc})})
        bar.set_postfix(test_acc=f"{acc:.3f}")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if is_main:
        _write_index(real, cfg, folder, key)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return Experts.load(folder).first(cfg.num_experts)


def _write_index(real: RealData, cfg: ExpertConfig, folder: Path, key: str) -> None:
    from safetensors import safe_open

    entries, names = [], None
    count = cfg.num_experts  # and any further experts a larger earlier request left complete
    while (folder / f"expert-{count:03d}.safetensors").is_file():
        count += 1
    for i in range(count):
        file = f"expert-{i:03d}.safetensors"
        with safe_open(str(folder / file), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["distilkit"])
            if names is None:
                names = [k.split("/", 1)[1] for k in f.keys() if k.startswith("epoch-0/")]
        entries.append({"file": file, "test_accuracy": meta["test_accuracy"]})
    c, h, w = real.image_shape
    order = [n for n, _ in seeded_model(cfg.model, real, None).named_parameters()]
    if sorted(order) != sorted(names or []):
        raise DistilkitError(f"expert files in {folder} do not match model {cfg.model!r}; remove the folder")
    index = {"format": FORMAT_VERSION, "key": key, "config": {**asdict(cfg), "num_experts": count},
             "param_names": order,
             "source": {k: real.info.get(k) for k in ("id", "hub_id", "subset", "split", "revision")},
             "source_fingerprint": real.fingerprint(), "pixel_space": real.pixel_space.kind,
             "image_shape": [c, h, w], "num_classes": real.num_classes, "experts": entries}
    write_atomic(folder / INDEX_FILE, jsonio.dumps(index, indent=1))


def check_matches(experts: Experts, real: RealData, model: str) -> None:
    """Refuse experts trained on other data or another architecture than the run asks for."""
    if experts.index.get("source_fingerprint") != real.fingerprint():
        raise ConfigError(f"experts in {experts.folder} were trained on other data (or another pixel space) "
                          "than this run's source")
    if experts.model != model:
        raise ConfigError(f"experts in {experts.folder} are {experts.model!r} networks, the run uses {model!r}")


def open_experts(folder: str | Path) -> Experts:
    """The complete experts in a local ``folder``. A Hub reference (``hf://...``) is fetched to a local
    folder before a method runs (:func:`distilkit.hub.experts.fetch_hub_inputs`); here it is an error."""
    if str(folder).startswith("hf://"):
        raise ConfigError(f"experts {folder} are on the Hub: fetch them first "
                          "(distilkit.hub.experts.fetch_hub_inputs, which `distilkit distill` calls)")
    return Experts.load(Path(folder).expanduser())
