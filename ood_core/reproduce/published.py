"""The seed papers' published CIFAR-10 figures, as data (docs/methods.md §7).

Every row names its source. All figures are averages over the papers' six CIFAR OOD sets
(SVHN, LSUN-C, LSUN-R, iSUN, Textures, Places365), FPR95 / AUROC in %, FPR95 with ID as the
positive class. Our OOD sets differ (iSUN, DTD, MNIST and two noise sets) and our CIFAR-10
test images are JPEG re-encodings, so compare orderings, not absolute figures.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published average: ``method`` is our registered name, ``label`` the paper's."""

    source: str
    method: str
    label: str
    fpr95: float
    auroc: float
    note: str = ""


NAP = "NAP paper, appendix table (CIFAR-10, DenseNet-101)"
LINE = "LINe paper, table (CIFAR-10, DenseNet-101)"
OPNP = "OPNP paper (CIFAR-10, a ResNet-50 the authors trained)"
SOURCES = (NAP, LINE, OPNP)
SHORT = {NAP: "NAP", LINE: "LINe", OPNP: "OPNP"}  # the page's source column; its legend gives the full names

# docs/methods.md §7.1 (NAP), §7.3 (LINe), §7.4 (OPNP), copied verbatim.
PUBLISHED: tuple[Published, ...] = (
    Published(NAP, "msp", "MSP", 48.69, 92.52),
    Published(NAP, "energy", "Energy", 26.59, 94.63),
    Published(NAP, "react", "ReAct", 26.45, 94.67),
    Published(NAP, "dice", "DICE", 21.79, 94.97, "its Textures and LSUN-C cells look swapped (docs/methods.md §7.1)"),
    Published(NAP, "ash-s", "ASH(-S)", 15.05, 96.91),
    Published(NAP, "knn", "KNN", 16.12, 96.79),
    Published(NAP, "nap-m", "NAP-M", 19.09, 95.11),
    Published(NAP, "nap-e", "NAP-E (w = 0.4)", 9.02, 98.15),
    Published(NAP, "nap-r", "NAP-R", 9.18, 98.02),
    Published(NAP, "nap-d", "NAP-D", 11.66, 97.47),
    Published(NAP, "nap-a", "NAP-A", 11.14, 97.48),
    Published(NAP, "nap-k", "NAP-K", 7.79, 98.38),
    Published(LINE, "msp", "MSP", 48.73, 92.46),
    Published(LINE, "odin", "ODIN", 24.57, 93.71),
    Published(LINE, "mahalanobis", "Mahalanobis", 31.42, 89.15),
    Published(LINE, "energy", "Energy", 26.55, 94.57),
    Published(LINE, "react", "ReAct", 26.45, 94.95),
    Published(LINE, "dice", "DICE", 20.83, 95.24),
    Published(LINE, "dice+react", "DICE + ReAct", 16.48, 96.64),
    Published(LINE, "line", "LINe", 14.71, 96.99),
    Published(OPNP, "energy", "Energy", 9.14, 97.74),
    Published(OPNP, "opnp", "Energy + OPNP", 6.61, 98.42),
    Published(OPNP, "react", "ReAct", 6.59, 98.41),
    Published(OPNP, "opnp+react", "ReAct + OPNP", 5.04, 98.72),
)

# LINe paper, ablation and δ sweep (ImageNet, ResNet-50; its CIFAR ablation is not published): §7.3.
LINE_ABLATION_SOURCE = "LINe paper, ablation (ImageNet, ResNet-50)"
LINE_ABLATION = {"energy": (58.41, 86.17), "ac": (35.40, 91.86), "ac+ap": (26.88, 93.77),
                 "ac+wp": (23.19, 94.57), "full": (20.70, 95.03)}
LINE_DELTA_SWEEP = ("0.1 → 41.18, 0.4 → 23.43, 0.8 (default) → 20.70, 1.0 → 21.69, 1.5 → 26.96, "
                    "2.0 → 31.88, ∞ → 44.88")

# LINe paper, Table 8 (CIFAR-10): share (%) of the top-10 % neurons important to more than o % of the classes.
LINE_OVERLAP_SOURCE = "LINe paper, Table 8 (CIFAR-10)"
LINE_OVERLAP = {20.0: 24.56, 30.0: 23.39}


def published_for(source: str) -> list[Published]:
    """The rows of one source, in table order."""
    return [row for row in PUBLISHED if row.source == source]
