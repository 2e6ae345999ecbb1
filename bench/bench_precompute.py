"""Precompute throughput vs the bare forward pass (target: precompute ≥ 90 % of bare).

DenseNet-BC-100 on CIFAR-10 test images, same batch size, no ODIN pass (ODIN is extra
model work by design, not overhead). Two comparisons:

* in-memory: both runs consume the same already-transformed tensors, so the ratio
  measures the builder's own overhead (logit check, copies, chunk writes, manifest);
* end-to-end: both decode the JPEGs through the model transform with a DataLoader.

    python bench/bench_precompute.py [--images 1000] [--batch-size 128] [--device auto]
    python bench/bench_precompute.py --model resnet50 --random-weights --images 64 --batch-size 32
        (ImageNet models: seconds per image of the whole precompute; the CIFAR images are
        resized to 224 px by the model's transform, so decoding is cheaper than ImageNet JPEGs')
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from ood_core.cache.builder import build_features, subset_indices  # noqa: E402
from ood_core.cache.store import resolve_device  # noqa: E402
from ood_core.datasets import create_dataset  # noqa: E402
from ood_core.datasets.base import DatasetInfo, ImageDataset, TransformedDataset, collate_skip_corrupt  # noqa: E402
from ood_core.models import create_model  # noqa: E402


class TensorImages(ImageDataset):
    """Already-transformed images: items are (tensor, label); paired with an identity transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.info = DatasetInfo("bench-tensors", "in-memory tensors", kind="id")
        self.split = "test"
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])

    def label(self, index: int) -> int:
        return int(self.labels[index])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(model, batches, device: torch.device) -> float:
    """Seconds for the forward pass alone over pre-built batches."""
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x.to(device, non_blocking=True))
    _sync(device)
    return time.perf_counter() - start


def bare_loader(model, loader, device: torch.device) -> float:
    """Seconds for decode + transform + forward through a DataLoader (no caching)."""
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for images, *_ in loader:
            model(images.to(device, non_blocking=True))
    _sync(device)
    return time.perf_counter() - start


def timed_build(model, dataset, cache: Path, **kw) -> float:
    start = time.perf_counter()
    build_features(model, dataset, "test", cache, progress=False, rebuild=True, **kw)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--model", default="densenet100-cifar10")
    parser.add_argument("--random-weights", action="store_true",
                        help="torchvision / timm models without their pretrained weights (the cost is the same)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = (create_model(args.model, pretrained=False) if args.random_weights else create_model(args.model))
    model = model.to(device).eval()
    dataset = create_dataset("cifar10", "test")
    indices = subset_indices(dataset, args.images)
    transform = model.transform()
    items = TransformedDataset(dataset, transform, indices)
    images = torch.stack([items[i][0] for i in range(len(items))])
    labels = torch.tensor([dataset.label(i) for i in indices])
    batches = list(images.split(args.batch_size))
    n = len(indices)
    print(f"{args.model} on {n} cifar10 test images, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads")

    with torch.inference_mode():  # warm-up (allocator, cuDNN autotune, lazy init)
        model(batches[0].to(device))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        identity = TensorImages(images, labels)
        model.transform = lambda: (lambda tensor: tensor)  # the tensors are already transformed
        bare = min(bare_forward(model, batches, device) for _ in range(2))
        cached = min(timed_build(model, identity, cache, device=device, batch_size=args.batch_size)
                     for _ in range(2))
        print(f"in-memory   bare forward {n / bare:8.1f} img/s   precompute {n / cached:8.1f} img/s   "
              f"ratio {bare / cached:6.1%}")
        del model.transform  # back to the class's JPEG transform
        loader = DataLoader(TransformedDataset(dataset, transform, indices), batch_size=args.batch_size,
                            num_workers=args.num_workers, collate_fn=collate_skip_corrupt)
        bare_e2e = bare_loader(model, loader, device)
        cached_e2e = timed_build(model, dataset, cache, device=device, batch_size=args.batch_size,
                                 limit=args.images, num_workers=args.num_workers)
        print(f"end-to-end  bare forward {n / bare_e2e:8.1f} img/s   precompute {n / cached_e2e:8.1f} img/s   "
              f"ratio {bare_e2e / cached_e2e:6.1%}   ({cached_e2e / n * 1000:.0f} ms per image)")


if __name__ == "__main__":
    main()
