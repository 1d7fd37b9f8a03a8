"""``verify``: re-run the evaluations a card claims and check that the claimed accuracies hold.

Each entry of ``distilkit.evaluation`` records its model, protocol, number of runs and seed, so
it can be re-run exactly. A claim holds when the re-measured mean is within the tolerance of the
claimed mean: two claimed standard deviations (the spread over runs the card itself reports),
and at least ``MIN_TOLERANCE`` so that a claim with one run (std 0) is not held to bit-exactness
across hardware. An entry made with ``evaluate --scores`` also claims IOR, HLR, LRS and ARS; each is
re-measured and held to the same rule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.models import validate_model_name
from distilkit.scores import SCORE_NAMES

MIN_TOLERANCE = 0.01
STD_FACTOR = 2.0


@dataclass
class Verdict:
    model: str
    preset: str
    runs: int
    claimed: float
    claimed_std: float
    measured: float
    tolerance: float
    metric: str = "accuracy"  # or a fair score: ior, hlr, lrs, ars

    @property
    def holds(self) -> bool:
        return abs(self.measured - self.claimed) <= self.tolerance


def claim_protocol(claim: dict):
    """The training protocol a claim was measured with (its stored dict, else its preset)."""
    from distilkit.train import TrainConfig, train_preset

    stored = claim.get("protocol")
    if isinstance(stored, dict):
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in stored.items() if k in known})
    return train_preset(str(claim.get("preset")))


def verify_set(dset: DistilledSet, accelerator=None, source: str | None = None) -> list[Verdict]:
    """Re-run every evaluation claimed in the set's card."""
    from distilkit.evaluate import evaluate_set

    claims = [c for c in dset.evaluation if isinstance(c, dict)]
    if not claims:
        raise DistilkitError("the card claims no evaluation results: nothing to verify")
    parsed = []
    for claim in claims:  # every claim is read and checked before the first one is re-run
        try:
            model, preset, runs = str(claim["model"]), str(claim["preset"]), int(claim["runs"])
            claimed, std = float(claim["mean"]), float(claim.get("std") or 0.0)
            protocol = claim_protocol(claim)
        except (KeyError, TypeError, ValueError) as err:
            raise DistilkitError(f"an evaluation entry in the card is incomplete ({err})") from None
        if not (math.isfinite(claimed) and math.isfinite(std)) or runs < 1:
            raise DistilkitError(f"the card's claim for {model!r} ({preset}) is not a finite accuracy over >= 1 run")
        validate_model_name(model, "the card's evaluation claim")
        scores = claim.get("scores") if isinstance(claim.get("scores"), dict) else None
        parsed.append((claim, model, preset, runs, claimed, std, protocol, scores))
    verdicts = []
    for claim, model, preset, runs, claimed, std, protocol, scores in parsed:
        [result] = evaluate_set(dset, runs=runs, preset=preset, models=[model], seed=int(claim.get("seed", 0)),
                                source=source, accelerator=accelerator, protocol=protocol, scores=bool(scores))
        verdicts.append(Verdict(model, preset, runs, claimed, std, float(result["mean"]),
                                max(STD_FACTOR * std, MIN_TOLERANCE)))
        for name in SCORE_NAMES if scores else ():  # fair scores are checked like accuracies
            try:
                claimed_score, score_std = float(scores[name]["mean"]), float(scores[name].get("std") or 0.0)
            except (KeyError, TypeError, ValueError) as err:
                raise DistilkitError(f"the card's {name} score for {model} is incomplete ({err})") from None
            verdicts.append(Verdict(model, preset, runs, claimed_score, score_std,
                                    float(result["scores"][name]["mean"]),
                                    max(STD_FACTOR * score_std, MIN_TOLERANCE), metric=name))
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> str:
    lines = [f"{'model':<22} {'protocol':<9} {'runs':>4}  {'claimed':>16}  {'measured':>8}  {'tolerance':>9}  verdict"]
    for v in verdicts:
        label = v.model if v.metric == "accuracy" else f"{v.model} {v.metric.upper()}"
        lines.append(f"{label:<22} {v.preset:<9} {v.runs:>4}  {100 * v.claimed:7.2f} ± {100 * v.claimed_std:5.2f} %"
                     f"  {100 * v.measured:6.2f} %  {100 * v.tolerance:7.2f} %  "
                     f"{'holds' if v.holds else 'DOES NOT HOLD'}")
    return "\n".join(lines)
