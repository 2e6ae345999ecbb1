"""KNN at ImageNet scale: torch GEMM + top-k against faiss's exact inner-product search.

What KNN's score costs is one search per feature tensor: the top-k cosine similarities of every
query row against the training bank (``ood_core.fast.similarity``; the scorer keeps the top
k_max = 1,000 and a k move is then a lookup). This times the two backends of that search,
*interleaved call by call in one run* (a load burst on the shared machine hits both), and
prints their ratio:

* ``torch``: ``ood_core.fast.similarity.torch_top_cosine`` (chunked GEMM + top-k, tiled bank);
* ``faiss``: ``ood_core.fast.faiss_search.top_inner_products`` (faiss's exact flat
  inner-product search, the one ``IndexFlatIP`` runs, on the bank's own memory).

**Data.** ImageNet-like features by the recipe and parameters of ``ood_core.synthetic``'s
``SyntheticSettings.imagenet()`` preset (D = 2,048, K = 1,000 sparse positive class means,
ReLU noise): bank rows around the class means, L2-normalised; queries half ID (around the class
means), half OOD (around unseen means), as the 50,000 ID + 40,000 OOD benchmark is.

**Sizes.** Banks of 12,811 rows (the paper's α = 1 % of ImageNet's 1,281,167) and larger
(128,117 = 10 %, 320,292 = 25 %: the largest that fits this 2-core machine's time and memory
with other jobs running; all 1.28M rows would be 10.5 GB of float32). The full benchmark's
90,000 queries take minutes per call on 2 cores, so each bank is timed on a subset of
``--queries`` rows (half ID, half OOD); the search is independent per query row (both backends
block queries by 4,096 rows or fewer), so time scales linearly in the query count. The
figures for all 90,000 queries, and for the 1.28M-row bank, are printed as **extrapolations**
from the measured time per (query, bank row) and labelled so. ``--full-queries`` additionally
times all 90,000 queries against the smallest bank (one interleaved round), measured, not
extrapolated.

Run:  python -m bench.bench_knn --quick                 (≈ 30 s: banks 12,811 and 32,768, 512 queries)
      python -m bench.bench_knn                         (≈ 17 min on 2 loaded cores, ~3 GB RAM)
      python -m bench.bench_knn --full-queries --json bench-knn.json     (+ ≈ 10 min)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import default_device, environment, format_ms, format_table, time_interleaved, write_json
from ood_core.fast import faiss_search, similarity
from ood_core.synthetic import SyntheticSettings

IMAGENET_TRAIN_ROWS = 1_281_167
IMAGENET_QUERIES = (50_000, 40_000)  # ID validation, OOD (iNaturalist + SUN + Places + Textures)
DEFAULT_BANKS = (12_811, 128_117, 320_292)  # α = 1 %, 10 %, 25 % of ImageNet's training rows
QUICK_BANKS = (12_811, 32_768)
GENERATION_CHUNK = 16_384  # rows generated at a time (bounds the temporaries)


@dataclass(frozen=True)
class Case:
    """One timed search: ``queries`` rows against ``bank`` rows, top-``k``."""

    bank: int
    k: int
    queries: int


@dataclass
class Result:
    """Both backends on one case (ms are wall-clock; ratio = faiss / torch, < 1: faiss faster)."""

    case: Case
    torch_ms: float
    faiss_ms: float
    torch_min_ms: float
    faiss_min_ms: float
    ratio_median: float
    ratio_min: float
    repeats: int
    max_abs_difference: float  # max |faiss − torch| over the (queries, k) similarities
    same_neighbours: float  # share of rows whose neighbour sets agree (ties aside: see agreement())
    auto_picks: str

    def ns_per_pair(self, backend: str) -> float:
        """Nanoseconds per (query, bank row) pair: the throughput an extrapolation rests on."""
        ms = self.torch_ms if backend == "torch" else self.faiss_ms
        return ms * 1e6 / (self.case.queries * self.case.bank)


class FeatureMaker:
    """ImageNet-like rows by ``ood_core.synthetic``'s recipe with the ``imagenet()`` preset's
    parameters: ReLU(μ_c + σ ε) around sparse positive class means (ID, bank) or unseen ones (OOD)."""

    def __init__(self, settings: SyntheticSettings, seed: int = 0) -> None:
        self.s = settings
        self.gen = torch.Generator().manual_seed(seed)
        self.shared = settings.shared_offset * torch.rand(settings.dim, generator=self.gen)
        self.class_means = self._sparse_means(settings.classes)
        self.ood_means = self._sparse_means(settings.classes)
        sigma = 1.0 - settings.noise_spread + settings.noise_spread * torch.rand(settings.dim, generator=self.gen)
        self.sigma = settings.noise * sigma

    def _sparse_means(self, count: int) -> Tensor:
        s = self.s
        active = torch.rand(count, s.dim, generator=self.gen) < s.density
        return self.shared + active * (s.mean_low + s.mean_spread * torch.rand(count, s.dim, generator=self.gen))

    def rows(self, count: int, ood: bool = False, normalise: bool = False) -> Tensor:
        """(count, D) float32 features (unit rows with ``normalise``), generated in chunks."""
        means = self.ood_means if ood else self.class_means
        out = torch.empty(count, self.s.dim)
        for start in range(0, count, GENERATION_CHUNK):
            part = out[start:start + GENERATION_CHUNK]
            groups = torch.randint(0, len(means), (len(part),), generator=self.gen)
            part.normal_(generator=self.gen).mul_(self.sigma).add_(means[groups]).clamp_(min=0)
            if normalise:
                part.copy_(F.normalize(part, dim=1))
        return out


def agreement(torch_result: tuple[Tensor, Tensor], faiss_result: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """(max |Δ| of the similarities, share of rows with the same neighbour set). A row whose
    sets differ only where its k-th similarity is tied (within 1e-6) with a row left out counts
    as the same: exact search may break such ties either way."""
    (tv, ti), (fv, fi) = torch_result, faiss_result
    difference = float((tv - fv).abs().max())
    same = (ti.sort(dim=1).values == fi.sort(dim=1).values).all(dim=1)
    tied = (tv[:, -1] - fv[:, -1]).abs() <= 1e-6
    return difference, float((same | tied).float().mean())


def searches(device: torch.device) -> dict[str, Callable[..., tuple[Tensor, Tensor | None]]]:
    """The backends that can run on ``device``: torch always; faiss when importable, and on CUDA
    only with a faiss GPU build (the faiss-cpu wheel has none: then torch alone is timed)."""
    out: dict[str, Callable[..., tuple[Tensor, Tensor | None]]] = {"torch": similarity.torch_top_cosine}
    if faiss_search.available() and (device.type == "cpu" or faiss_search.gpu_available()):
        out["faiss"] = faiss_search.top_inner_products
    return out


def run_case(case: Case, bank: Tensor, queries: Tensor, repeats: int, device: torch.device) -> Result:
    """Time the backends on ``case`` interleaved (after a warm-up on 64 rows each), then check
    that they agree on the same rows."""
    rows = queries[:case.queries]
    backends = searches(device)
    for search in backends.values():  # warm-up: thread pools, allocator, faiss's first call
        search(rows[:64], bank, case.k)
    timings = time_interleaved({name: (lambda s=search: s(rows, bank, case.k)) for name, search in backends.items()},
                               repeats, device, warmup=False)
    t, f = timings["torch"], timings.get("faiss")
    difference = same = math.nan
    if f is not None:
        check = rows[:min(len(rows), 512)]
        difference, same = agreement(backends["torch"](check, bank, case.k, with_indices=True),
                                     backends["faiss"](check, bank, case.k, with_indices=True))
    nan = math.nan
    return Result(case, t.median_ms, f.median_ms if f else nan, t.min_ms, f.min_ms if f else nan,
                  f.median_ms / t.median_ms if f else nan, f.min_ms / t.min_ms if f else nan, repeats, difference,
                  same, similarity.choose_backend("auto", device, case.bank, case.k))


def run_full_queries(bank: Tensor, maker: FeatureMaker, k: int, device: torch.device) -> dict[str, Any]:
    """All 90,000 queries against ``bank``: one interleaved round of the backends (measured)."""
    n_id, n_ood = IMAGENET_QUERIES
    queries = torch.cat([maker.rows(n_id), maker.rows(n_ood, ood=True)]).to(device)
    timings = time_interleaved({name: (lambda s=search: s(queries, bank, k)) for name, search in searches(device).items()},
                               1, device, warmup=False)
    torch_ms = timings["torch"].median_ms
    faiss_ms = timings["faiss"].median_ms if "faiss" in timings else math.nan
    return {"bank": bank.shape[0], "k": k, "queries": len(queries), "torch_ms": torch_ms, "faiss_ms": faiss_ms,
            "ratio": faiss_ms / torch_ms}


def extrapolations(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Estimated times for all 90,000 queries at each measured bank, and against all 1.28M
    rows from the largest measured bank's time per pair, for k = 1,000 (EXTRAPOLATED, linear)."""
    n = sum(IMAGENET_QUERIES)
    out = []
    measured = [r for r in results if r.case.k == max(x.case.k for x in results)]
    for r in measured:
        out.append({"bank": r.case.bank, "k": r.case.k, "queries": n, "from_bank": r.case.bank,
                    "torch_s": r.ns_per_pair("torch") * n * r.case.bank / 1e9,
                    "faiss_s": r.ns_per_pair("faiss") * n * r.case.bank / 1e9})
    if measured:
        largest = max(measured, key=lambda r: r.case.bank)
        if largest.case.bank < IMAGENET_TRAIN_ROWS:
            out.append({"bank": IMAGENET_TRAIN_ROWS, "k": largest.case.k, "queries": n, "from_bank": largest.case.bank,
                        "torch_s": largest.ns_per_pair("torch") * n * IMAGENET_TRAIN_ROWS / 1e9,
                        "faiss_s": largest.ns_per_pair("faiss") * n * IMAGENET_TRAIN_ROWS / 1e9})
    return out


def format_fraction(value: float, spec: str = ".2f", suffix: str = "") -> str:
    """``value`` formatted, or '—' when it was not measured (NaN)."""
    return "—" if math.isnan(value) else f"{value:{spec}}{suffix}"


def print_results(results: Sequence[Result], extrapolated: Sequence[dict[str, Any]],
                  full: dict[str, Any] | None) -> None:
    headers = ["bank rows", "k", "queries", "torch ms", "faiss ms", "faiss/torch", "(min)", "torch ns/pair",
               "faiss ns/pair", "max |Δ|", "same nbrs", "auto"]
    rows = [[f"{r.case.bank:,}", str(r.case.k), f"{r.case.queries:,}", format_ms(r.torch_ms), format_ms(r.faiss_ms),
             format_fraction(r.ratio_median), format_fraction(r.ratio_min), f"{r.ns_per_pair('torch'):.1f}",
             format_fraction(r.ns_per_pair('faiss'), ".1f"), format_fraction(r.max_abs_difference, ".1e"),
             format_fraction(100 * r.same_neighbours, ".1f", " %"),
             r.auto_picks] for r in results]
    print("\nMeasured (median of the interleaved repeats; faiss/torch < 1: faiss faster):")
    print(format_table(headers, rows))
    if full is not None:
        print(f"\nMeasured, all {full['queries']:,} queries against {full['bank']:,} rows, k = {full['k']} "
              f"(one interleaved round): torch {full['torch_ms'] / 1e3:.1f} s, faiss "
              f"{format_fraction(full['faiss_ms'] / 1e3, '.1f')} s, faiss/torch {format_fraction(full['ratio'])}")
    if extrapolated:
        print("\nEXTRAPOLATED (not measured): all 90,000 queries, linear in queries × bank rows from the "
              "measured time per pair of the bank named in 'from':")
        print(format_table(["bank rows", "k", "from", "torch s (est.)", "faiss s (est.)"],
                           [[f"{e['bank']:,}", str(e["k"]), f"{e['from_bank']:,}", f"{e['torch_s']:,.0f}",
                             format_fraction(e["faiss_s"], ",.0f")] for e in extrapolated]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="banks 12,811 and 32,768, 512 queries, 1 repeat")
    parser.add_argument("--banks", type=int, nargs="+", default=None, help=f"bank rows (default {DEFAULT_BANKS})")
    parser.add_argument("--ks", type=int, nargs="+", default=None,
                        help="k values; default: 1000 at every bank (what the scorer searches: k_max) and 10 at "
                             "the smallest (the paper's α = 1 % setting)")
    parser.add_argument("--queries", type=int, default=None, help="query rows timed per case (half ID, half OOD); "
                        "default 1,024 (512 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--full-queries", action="store_true",
                        help="also time all 90,000 queries against the smallest bank (k = 1000; minutes)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present, else cpu)")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    banks = tuple(args.banks or (QUICK_BANKS if args.quick else DEFAULT_BANKS))
    n_queries = args.queries or (512 if args.quick else 1024)
    repeats = args.repeats or (1 if args.quick else 3)
    device = torch.device(args.device) if args.device else default_device()
    settings = SyntheticSettings.imagenet()
    maker = FeatureMaker(settings)
    faiss = faiss_search._import()[0]
    print(f"KNN search on {device} ({torch.get_num_threads()} torch threads, faiss {faiss_search.version()}"
          f"{f', {faiss.omp_get_max_threads()} faiss threads' if faiss is not None else ''}); D = {settings.dim}; "
          f"{n_queries:,} query rows per case (half ID, half OOD); banks {', '.join(f'{b:,}' for b in banks)}")
    if "faiss" not in searches(device):
        print(f"faiss cannot search on {device} here ("
              f"{faiss_search.unavailable_reason() or 'no faiss GPU build'}): timing torch alone")
    queries = torch.cat([maker.rows(n_queries // 2), maker.rows(n_queries - n_queries // 2, ood=True)]).to(device)
    cases = [Case(bank, k, n_queries) for bank in banks
             for k in (args.ks or ((10, 1000) if bank == min(banks) else (1000,)))]
    results: list[Result] = []
    bank_tensor, bank_rows = None, 0
    started = time.perf_counter()
    for case in cases:
        if case.bank != bank_rows:
            bank_tensor = None  # free the previous bank first
            bank_tensor, bank_rows = maker.rows(case.bank, normalise=True).to(device), case.bank
        k = min(case.k, case.bank)
        result = run_case(dataclasses.replace(case, k=k), bank_tensor, queries, repeats, device)
        results.append(result)
        print(f"  bank {case.bank:>9,}  k {k:>4}: torch {format_ms(result.torch_ms)} ms, faiss "
              f"{format_ms(result.faiss_ms)} ms, faiss/torch {format_fraction(result.ratio_median)}", flush=True)
    full = None
    if args.full_queries:
        smallest = min(banks)
        bank_tensor = maker.rows(smallest, normalise=True).to(device) if bank_rows != smallest else bank_tensor
        full = run_full_queries(bank_tensor, maker, min(1000, smallest), device)
    extrapolated = extrapolations(results)
    print_results(results, extrapolated, full)
    picks = sorted({r.auto_picks for r in results})
    print(f"\nauto on {device.type} picks {', '.join(picks)} here (the rule: {similarity.FAISS_MEASURED}); "
          f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"environment": environment(), "faiss": faiss_search.version(), "device": str(device),
                   "queries_per_case": n_queries, "repeats": repeats, "results": results,
                   "ns_per_pair": [{"bank": r.case.bank, "k": r.case.k, "torch": r.ns_per_pair("torch"),
                                    "faiss": r.ns_per_pair("faiss")} for r in results],
                   "full_queries": full, "extrapolated_not_measured": extrapolated}
        print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
