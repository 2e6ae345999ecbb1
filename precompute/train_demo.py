"""Train the embedded demo model ``demo-cnn`` on ``demo-mnist`` train (4,000 digits).

Seeded and deterministic on CPU for a fixed machine type, thread count and torch build
(``--threads``, default 2); under 3 minutes on an idle 2-core machine. Writes the weights
(safetensors) and a JSON record (seed, epochs, recipe, accuracies, Energy / MSP AUROC against
every demo OOD set, command, training time, torch version, thread count, CPU model, platform)
next to them. ``--seeds 0 1 2`` trains each seed with the same recipe, prints every seed's
test accuracy and training time and their min / mean / max (the spread is what reproduces
across machines), records them in the JSON and writes the first seed's weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.records import FeatureSet, FitContext

EPILOG = """examples:
  python -m precompute.train_demo                      # the shipped weights (ood_core/weights/)
  python -m precompute.train_demo --seeds 0 1 2        # the same, plus the accuracy spread over seeds 1, 2
  python -m precompute.train_demo --epochs 5 --out /tmp/demo_cnn.safetensors
  python -m precompute.train_demo --limit 500 --epochs 1 --out /tmp/smoke.safetensors
"""

# Recipe constants (recorded in the JSON); the CLI exposes what one reasonably changes.
BATCH_SIZE = 64
LEARNING_RATE = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
WARMUP_EPOCHS = 1
AUGMENTATION = {"rotate_deg": 10.0, "scale": (0.9, 1.1), "translate_px": 2.0}
# Input-noise augmentation: a training digit gets, with probability INPUT_NOISE_FRACTION,
# additive Gaussian pixel noise with its own std drawn uniformly from [0, INPUT_NOISE] (pixel
# scale [0, 1]), then clipped to [0, 1]; the other digits stay clean.
INPUT_NOISE = 0.3
INPUT_NOISE_FRACTION = 0.5
EVAL_BATCH = 1000
EPOCHS = 40


def random_affine(images: Tensor, generator: torch.Generator, rotate_deg: float = 10.0,
                  scale: tuple[float, float] = (0.9, 1.1), translate_px: float = 2.0) -> Tensor:
    """A random small affine warp per image, batched (one ``grid_sample``).

    images: (B, 1, H, W) float32 in [0, 1] (background 0, so zero padding is background).
    Returns (B, 1, H, W) float32. Draws from ``generator`` only (deterministic).
    """
    batch, _, height, width = images.shape
    draw = lambda low, high: torch.rand(batch, generator=generator) * (high - low) + low  # noqa: E731
    angle = torch.deg2rad(draw(-rotate_deg, rotate_deg))
    factor = draw(*scale)
    shift = torch.stack([draw(-translate_px, translate_px) * 2 / width,
                         draw(-translate_px, translate_px) * 2 / height], dim=1)
    # affine_grid maps output → input coordinates: the inverse of "rotate, scale, shift".
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (B, 2, 2)
    offset = -(theta @ shift.unsqueeze(2))
    grid = F.affine_grid(torch.cat([theta, offset], dim=2), list(images.shape), align_corners=False)
    return F.grid_sample(images.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


@torch.inference_mode()
def predict_features(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray | None = None) -> FeatureSet:
    """What the cache would hold for uint8 images (N, 28, 28): logits (N, K), penultimate and
    prepool_max features, labels (-1 when ``labels`` is None); eval mode, batched."""
    from ood_core.models.demo_cnn import to_model_input

    model.eval()
    outputs = [model(to_model_input(images[i:i + EVAL_BATCH])) for i in range(0, len(images), EVAL_BATCH)]
    y = torch.as_tensor(labels, dtype=torch.long) if labels is not None else torch.full((len(images),), -1)
    return FeatureSet(logits=torch.cat([o.logits for o in outputs]),
                      penultimate=torch.cat([o.penultimate for o in outputs]),
                      prepool_max=torch.cat([o.prepool_max for o in outputs]), labels=y)


def predict_logits(model: torch.nn.Module, images: np.ndarray) -> Tensor:
    """Logits (N, K) float32 of uint8 images (N, 28, 28), in eval mode, batched."""
    return predict_features(model, images).logits


# The methods whose AUROC the training record reports (ood_core's scorers, at their defaults).
REPORTED_METHODS = ("energy", "msp")


def evaluate(model: torch.nn.Module, seed: int = 0) -> dict:
    """Accuracy on demo-mnist val / test, and Energy / MSP AUROC (ID = positive) of test vs each
    OOD set, scored by ood_core's scorers and metrics (as the app scores the cached features)."""
    from ood_core.datasets.demo import OOD_SETS, demo_mnist_arrays, ood_arrays
    from ood_core.metrics import accuracy, evaluate_many
    from ood_core.scorers import create_scorer

    val, id_test = (predict_features(model, *demo_mnist_arrays(split, seed)) for split in ("val", "test"))
    record: dict = {"val_accuracy": accuracy(val.logits, val.labels),
                    "test_accuracy": accuracy(id_test.logits, id_test.labels)}
    ood = {name: predict_features(model, ood_arrays(name)) for name in OOD_SETS}
    ctx = FitContext(head_weight=model.head_weight, head_bias=model.head_bias)
    auroc: dict[str, dict[str, float]] = {name: {} for name in OOD_SETS}
    with torch.inference_mode():
        for method in REPORTED_METHODS:
            scorer = create_scorer(method).fit(ctx)
            metrics = evaluate_many(scorer.score(id_test), {name: scorer.score(f) for name, f in ood.items()})
            for name, values in metrics.items():
                auroc[name][method] = values.auroc
    record["ood_auroc"] = auroc
    return record


def add_input_noise(images: Tensor, generator: torch.Generator, max_std: float, fraction: float = 1.0) -> Tensor:
    """Additive Gaussian noise with a per-image std ~ U(0, ``max_std``), clipped to [0, 1], on a
    random ``fraction`` of the images (each image independently; the others stay clean).

    images: (B, 1, H, W) float32 in [0, 1]; returns the same shape / dtype. Draws from
    ``generator`` only (deterministic); ``max_std == 0`` returns ``images`` unchanged.
    """
    if max_std <= 0:
        return images
    std = torch.rand(len(images), 1, 1, 1, generator=generator) * max_std
    if fraction < 1.0:
        std = std * (torch.rand(len(images), 1, 1, 1, generator=generator) < fraction)
    noise = torch.randn(images.shape, generator=generator) * std
    return (images + noise.to(images.device)).clamp_(0.0, 1.0)


def train(epochs: int, seed: int, limit: int | None = None, progress: bool = True,
          input_noise: float = INPUT_NOISE, noise_fraction: float = INPUT_NOISE_FRACTION):
    """Train a fresh ``DemoCNN`` on demo-mnist train; returns ``(model, train_accuracy_last_epoch)``.

    SGD (Nesterov momentum 0.9, weight decay 5e-4), batch 64, one warm-up epoch then cosine
    decay from lr 0.05, random affine augmentation, then per-image Gaussian input noise with
    std ~ U(0, ``input_noise``) on a random ``noise_fraction`` of the digits (it teaches the
    net that pixel noise is no class evidence, while the clean rest keeps the clean-digit
    accuracy; digits only, no outlier data). Deterministic for a given seed, thread count,
    machine type and torch build.
    """
    from tqdm import tqdm

    from ood_core.datasets.demo import demo_mnist_arrays
    from ood_core.datasets.splits import stratified_subset
    from ood_core.models.demo_cnn import DemoCNN, MNIST_MEAN, MNIST_STD

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = demo_mnist_arrays("train", seed=0)  # the split is fixed; seed is the training seed
    if limit is not None:
        keep = stratified_subset(labels.tolist(), limit, seed)
        images, labels = images[keep], labels[keep]
    x_all = torch.as_tensor(images, dtype=torch.float32).div(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y_all = torch.as_tensor(labels, dtype=torch.long)

    model = DemoCNN()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]  # no decay on BN / biases
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True)
    steps_per_epoch = math.ceil(len(x_all) / BATCH_SIZE)
    total, warmup = epochs * steps_per_epoch, min(WARMUP_EPOCHS, epochs) * steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    train_accuracy = 0.0
    bar = tqdm(range(epochs), desc="demo-cnn", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x_all), generator=generator)
        correct, loss_sum = 0, 0.0
        for start in range(0, len(order), BATCH_SIZE):
            index = order[start:start + BATCH_SIZE]
            x = add_input_noise(random_affine(x_all[index], generator, **AUGMENTATION), generator, input_noise,
                                noise_fraction)
            x = (x - MNIST_MEAN) / MNIST_STD
            logits = model(x).logits
            loss = F.cross_entropy(logits, y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct += int((logits.argmax(1) == y_all[index]).sum())
            loss_sum += float(loss.detach()) * len(index)
        train_accuracy = correct / len(x_all)
        bar.set_postfix(loss=f"{loss_sum / len(x_all):.4f}", acc=f"{train_accuracy:.4f}")
    return model.eval(), train_accuracy


def cpu_model() -> str:
    """The CPU's model name (first ``model name`` of /proc/cpuinfo when present, else
    ``platform.processor()``; "" when neither says)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or ""


def environment() -> dict:
    """What bit-for-bit reproduction depends on: torch build, thread count, CPU model, platform."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def spread(values: list[float], digits: int = 5) -> dict[str, float]:
    """{"min", "mean", "max"} of ``values``."""
    return {"min": round(min(values), digits), "mean": round(sum(values) / len(values), digits),
            "max": round(max(values), digits)}


def build_parser() -> argparse.ArgumentParser:
    from ood_core.models.demo_cnn import default_weights_path

    parser = argparse.ArgumentParser(
        prog="python -m precompute.train_demo",
        description="Train the embedded demo model demo-cnn on demo-mnist train and write its "
                    "weights (safetensors) and a JSON training record next to them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=EPILOG)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    seeds = parser.add_mutually_exclusive_group()
    # default SUPPRESS (absent unless given), not 0: argparse only sees a conflict with --seeds when
    # the value is not the default object, and the help then shows no "(default: None)".
    seeds.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                       help="training seed (initialisation, order, augmentation) (default: 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                       help="train each of these seeds with the same recipe, print each seed's test accuracy "
                            "and training time and their min / mean / max, record them in the JSON; the "
                            "weights written are the first seed's")
    parser.add_argument("--out", type=Path, default=default_weights_path(),
                        help="weights file to write; the JSON record goes to the same path with .json")
    parser.add_argument("--input-noise", type=float, default=INPUT_NOISE,
                        help="max std of the per-image Gaussian pixel-noise augmentation (pixels in [0, 1]); 0 = off")
    parser.add_argument("--noise-fraction", type=float, default=INPUT_NOISE_FRACTION,
                        help="fraction of the training digits that get the input noise (each digit independently)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (set explicitly: the tensors are bit-identical only for the "
                             "same thread count, machine type and torch build)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on a class-balanced subset of this many digits (smoke tests)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if not 0.0 <= args.input_noise <= 1.0:
        parser.error("--input-noise must be in [0, 1]")
    if not 0.0 <= args.noise_fraction <= 1.0:
        parser.error("--noise-fraction must be in [0, 1]")
    seeds: list[int] = args.seeds if args.seeds is not None else [getattr(args, "seed", 0)]
    if len(set(seeds)) != len(seeds):
        parser.error("--seeds must not repeat a seed")
    from safetensors.torch import save_file

    from ood_core.models.demo_cnn import PREPROCESSING, WIDTHS

    # Process-wide torch settings are restored afterwards (main() is also called from tests).
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    load_at_start = load_average()
    per_seed: dict[int, dict] = {}
    try:
        env = environment()
        for seed in seeds:
            started = time.perf_counter()
            trained, train_accuracy = train(args.epochs, seed, args.limit, progress=not args.no_progress,
                                            input_noise=args.input_noise, noise_fraction=args.noise_fraction)
            seconds = time.perf_counter() - started
            per_seed[seed] = {"train_accuracy_last_epoch": train_accuracy, **evaluate(trained),
                              "training_seconds": round(seconds, 1)}
            if seed == seeds[0]:
                model = trained  # the weights written
            if len(seeds) > 1:
                print(f"seed {seed}: test accuracy {per_seed[seed]['test_accuracy']:.4f} "
                      f"(val {per_seed[seed]['val_accuracy']:.4f}), trained in {seconds:.1f} s", flush=True)
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])
    load_at_end = load_average()

    seed_spread = None
    if len(seeds) > 1:
        accuracies = [per_seed[seed]["test_accuracy"] for seed in seeds]
        times = [per_seed[seed]["training_seconds"] for seed in seeds]
        seed_spread = {"seeds": seeds, "test_accuracy": spread(accuracies), "training_seconds": spread(times, 1),
                       "per_seed": {str(seed): per_seed[seed] for seed in seeds}}
        acc, sec = seed_spread["test_accuracy"], seed_spread["training_seconds"]
        print(f"test accuracy over seeds {' '.join(map(str, seeds))}: min {acc['min']:.4f}  "
              f"mean {acc['mean']:.4f}  max {acc['max']:.4f}; training time min {sec['min']:.1f} s  "
              f"mean {sec['mean']:.1f} s  max {sec['max']:.1f} s")

    seed = seeds[0]
    metrics = per_seed[seed]
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes a multi-key metadata map in a random order (a Rust
    # HashMap), so the file's bytes (and weights_sha256) would differ between identical runs.
    metadata = {"training": json.dumps({"model": "demo-cnn", "seed": seed, "epochs": args.epochs}, sort_keys=True)}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(out)  # atomic: a crashed run never leaves a half-written weights file

    record = {
        "model": "demo-cnn",
        "dataset": "demo-mnist",
        "seed": seed,
        "epochs": args.epochs,
        "limit": args.limit,
        "train_images": args.limit or 4000,
        "widths": list(WIDTHS),
        "feature_dim": model.feature_dim,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": {"optimizer": "SGD nesterov", "batch_size": BATCH_SIZE, "lr": LEARNING_RATE,
                   "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "warmup_epochs": WARMUP_EPOCHS,
                   "schedule": "linear warm-up, cosine decay", "augmentation": AUGMENTATION,
                   "input_noise_max_std": args.input_noise, "input_noise_fraction": args.noise_fraction},
        "preprocessing": PREPROCESSING.describe(),
        **metrics,  # the written seed's: train / val / test accuracy, ood_auroc, training_seconds
        "seconds_per_epoch": round(metrics["training_seconds"] / args.epochs, 2),
        "seeds_spread": seed_spread,
        # The wall time depends on other jobs on the machine; the load average says how busy it was.
        "load_average_1min_at_start": load_at_start,
        "load_average_1min_at_end": load_at_end,
        "threads": env["threads"],
        "command": " ".join(["python -m precompute.train_demo", *map(shlex.quote, argv if argv is not None else sys.argv[1:])]),
        "torch": env["torch"],
        "python": env["python"],
        "environment": env,
        "weights_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), seed {seed}: test accuracy "
          f"{metrics['test_accuracy']:.4f}, trained in {metrics['training_seconds']:.1f} s "
          f"({env['threads']} threads, load average {load_at_end})")
    for name, values in metrics["ood_auroc"].items():
        print(f"  {name:14s} AUROC energy {values['energy']:.4f}  msp {values['msp']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
