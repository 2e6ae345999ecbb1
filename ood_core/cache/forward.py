"""Running a model over a dataset's items in resumable chunks (what :mod:`.builder` stores).

Every ``chunk_batches`` batches the outputs so far are written as one atomic chunk file
(:func:`ood_core.cache.store.write_chunk`); Ctrl-C raises :class:`BuildInterrupted` with the
chunks kept, and the next build of the same plan computes only the missing ones. Each batch's
logits are checked against the head (:func:`check_logits`): scorers recompute logits from
the cached penultimate features, so the two must agree.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ood_core.cache import store
from ood_core.datasets.base import ImageDataset, TransformedDataset, collate_skip_corrupt
from ood_core.models.base import OODModel
from ood_core.registry import OODLensError

LOGIT_TOLERANCE = 1e-4
ProgressCallback = Callable[[str, int, int], None]  # (description, items done, total)


class ModelWrapperError(OODLensError):
    """The model's logits are not ``penultimate @ W.T + b``: its wrapper is wrong."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build; ``chunks_kept`` chunks of ``entry`` survive for the next run."""

    def __init__(self, entry: Path, chunks_kept: int) -> None:
        super().__init__(f"interrupted; {chunks_kept} chunks kept, re-run the same command to resume")
        self.entry = entry
        self.chunks_kept = chunks_kept


def check_logits(logits: Tensor, penultimate: Tensor, weight: Tensor, bias: Tensor, model_name: str) -> float:
    """Relative error ‖z − (h Wᵀ + b)‖ / ‖z‖; raises :class:`ModelWrapperError` above 1e-4.

    Scorers recompute logits from cached h with the cached head, so the two must agree.
    """
    expected = torch.addmm(bias.double(), penultimate.double(), weight.double().T)
    error = float((logits.double() - expected).norm() / expected.norm().clamp(min=1e-12))
    if not error < LOGIT_TOLERANCE:
        raise ModelWrapperError(
            f"model {model_name}: logits differ from penultimate @ W.T + b (relative error {error:.2e} "
            f">= {LOGIT_TOLERANCE:.0e}); its wrapper must return the input of the final Linear as penultimate")
    return error


def check_finite_outputs(tensors: dict[str, Tensor], desc: str) -> None:
    """The model's outputs must be finite: NaN or ±inf would be ranked as if they were scores."""
    for name, bad in store.non_finite_counts(tensors).items():
        raise OODLensError(f"{desc}: the model produced {bad} non-finite values in its {name}; "
                           "check the model and its inputs")


def run_chunks(model: OODModel, dataset: ImageDataset, entry: Path, indices: list[int], todo: list[int],
               per_chunk: int, total: int, shown: tuple[int, int], desc: str, *, device: torch.device,
               batch_size: int, num_workers: int, with_odin: bool, eps: tuple[float, ...],
               temperature: float, progress: bool, on_progress: ProgressCallback | None,
               model_name: str) -> None:
    """Compute and write the chunks ``todo`` (each ``per_chunk`` items of ``indices``, ``total``
    items in all). ``shown``: (items already done, items in all) as the progress bar and
    ``on_progress`` count them: the whole entry in one process, this rank's share under torchrun."""
    # Every chunk but the dataset's last holds exactly chunk_batches full batches, so one
    # loader over the missing chunks' items yields batches that never straddle two chunks.
    wanted = [i for c in todo for i in indices[c * per_chunk:(c + 1) * per_chunk]]
    loader = DataLoader(TransformedDataset(dataset, model.transform(), wanted), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=collate_skip_corrupt,
                        pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    weight, bias = model.head_weight, model.head_bias
    if with_odin:
        from ood_core.models.perturb import odin_perturbed_logits
    done_items, shown_total = shown
    bar = tqdm(total=shown_total, initial=done_items, desc=desc, unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    written = 0
    chunk_iter = iter(todo)
    current = next(chunk_iter)
    parts: list[dict[str, Tensor]] = []
    skipped: list[int] = []
    seen_in_chunk = 0
    chunk_size = min(per_chunk, total - current * per_chunk)
    processed = done_items
    try:
        for images, labels, source_index, skipped_here in loader:
            skipped.extend(int(i) for i in skipped_here)
            batch_items = len(labels) + len(skipped_here)
            if images is not None:
                images = images.to(device, non_blocking=True)
                with torch.inference_mode():
                    out = model(images)
                    check_logits(out.logits, out.penultimate, weight, bias, model_name)
                part = {"logits": out.logits.float(), "penultimate": out.penultimate.float(),
                        "labels": labels, "source_index": source_index}
                if out.prepool_max is not None:
                    part["prepool_max"] = out.prepool_max.float()
                if with_odin:
                    # Needs input gradients: outside inference_mode, on a fresh leaf tensor.
                    part["odin_logits"] = odin_perturbed_logits(model, images.clone(), temperature, eps).detach().float()
                parts.append({k: v.detach().cpu() for k, v in part.items()})
            seen_in_chunk += batch_items
            processed += batch_items
            bar.update(batch_items)
            if on_progress is not None:
                on_progress(desc, processed, shown_total)
            if seen_in_chunk >= chunk_size:
                store.write_chunk(entry, current, chunk_tensors(parts, skipped))
                written += 1
                parts, skipped, seen_in_chunk = [], [], 0
                current = next(chunk_iter, None)
                if current is None:
                    break
                chunk_size = min(per_chunk, total - current * per_chunk)
    except KeyboardInterrupt:
        bar.close()
        raise BuildInterrupted(entry, len(store.existing_chunks(entry))) from None
    finally:
        bar.close()


def chunk_tensors(parts: list[dict[str, Tensor]], skipped: list[int]) -> dict[str, Tensor]:
    """One chunk's tensors: per-batch parts concatenated plus the skipped indices."""
    out: dict[str, Tensor] = {"skipped": torch.tensor(skipped, dtype=torch.long)}
    if parts:
        for name in parts[0]:
            dim = 1 if name == "odin_logits" else 0
            out[name] = torch.cat([p[name] for p in parts], dim=dim)
    return out


def concatenate(chunks: list[dict[str, Tensor]]) -> tuple[dict[str, Tensor] | None, list[int]]:
    """Join chunk tensors into entry tensors (adds ``predictions``); ``None`` if no rows."""
    skipped = [int(i) for c in chunks for i in c["skipped"].tolist()]
    filled = [c for c in chunks if "logits" in c]
    if not filled:
        return None, skipped
    tensors: dict[str, Tensor] = {}
    for name in filled[0]:
        if name == "skipped":
            continue
        dim = 1 if name == "odin_logits" else 0
        tensors[name] = torch.cat([c[name] for c in filled], dim=dim).contiguous()
    tensors["predictions"] = tensors["logits"].argmax(dim=1)
    return tensors, skipped
