"""Q1 ``pixels``: do distilled pixels stay in the range real images live in?

Images are mapped back to the original [0, 1] pixel scale (un-ZCA'd, un-normalised). Reported: the
fraction of distilled values outside [0, 1] (real data: 0 by construction), per-channel
min/max/mean/std of distilled vs real, and a histogram of intensities of both.
"""

from __future__ import annotations

import torch

from distilkit.audit._common import pyplot, save_figure, to_original_pixels
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.seeding import generator as seed_generator


@register_audit("pixels", question=1, summary="distilled vs real pixel statistics in the original [0, 1] space",
                defaults={"real_sample": 5000, "bins": 120}, presets={"smoke": {"real_sample": 500}})
def audit_pixels(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    distilled = to_original_pixels(dset.images, dset.pixel_space)
    n = min(cfg["real_sample"], real.train_images.shape[0])
    pick = torch.randperm(real.train_images.shape[0], generator=seed_generator("pixels-sample", ctx.seed))[:n]
    real_px = real.train_images[pick].float() / 255.0
    outside = ((distilled < 0) | (distilled > 1)).float().mean().item()
    below, above = (distilled < 0).float().mean().item(), (distilled > 1).float().mean().item()
    rows = []
    for c in range(distilled.shape[1]):
        d, r = distilled[:, c], real_px[:, c]
        rows.append([c, d.min().item(), d.max().item(), d.mean().item(), d.std().item(),
                     r.min().item(), r.max().item(), r.mean().item(), r.std().item()])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    lo = min(0.0, distilled.min().item())
    hi = max(1.0, distilled.max().item())
    ax.hist(real_px.flatten().numpy(), bins=cfg["bins"], range=(lo, hi), density=True, alpha=0.55, label="real")
    ax.hist(distilled.flatten().numpy(), bins=cfg["bins"], range=(lo, hi), density=True, alpha=0.55,
            label=f"distilled ({dset.method})")
    ax.axvspan(lo, 0, color="grey", alpha=0.15)
    ax.axvspan(1, hi, color="grey", alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("pixel value (original [0, 1] scale; shaded: outside the valid range)")
    ax.set_ylabel("density (log)")
    ax.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "pixels_histogram.png")
    summary = {"fraction_outside_unit_range": round(outside, 6), "fraction_below_0": round(below, 6),
               "fraction_above_1": round(above, 6), "distilled_min": round(distilled.min().item(), 4),
               "distilled_max": round(distilled.max().item(), 4), "real_fraction_outside": 0.0}
    verdict = (f"{100 * outside:.1f}% of distilled pixel values lie outside the valid [0, 1] range "
               f"(range {summary['distilled_min']:.2f} … {summary['distilled_max']:.2f}); real images never do.")
    table = Table("Pixel statistics per channel (original [0, 1] scale)",
                  ["channel", "distilled min", "distilled max", "distilled mean", "distilled std",
                   "real min", "real max", "real mean", "real std"], rows)
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure])
