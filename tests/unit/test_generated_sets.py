"""ood_core.datasets.generated: the shape the demo OOD sets and the noise sets share."""
from __future__ import annotations

import numpy as np
import pytest

from ood_core.datasets import demo_mnist, demo_ood, noise
from ood_core.datasets.generated import GeneratedFamily
from ood_core.registry import OODLensError


def test_a_family_memoises_read_only_images_and_names_its_members() -> None:
    calls = []

    def ramp(n: int, seed: int) -> np.ndarray:
        calls.append((n, seed))
        return np.full((n, 4, 4), seed, dtype=np.uint8)

    family = GeneratedFamily("toy set", {"toy-ramp": (ramp, "a ramp", "numpy")}, lambda seed, n: (f"seed={seed}",))
    first = family.arrays("toy-ramp", 3, 5)
    assert first.shape == (5, 4, 4) and not first.flags.writeable
    assert family.arrays("toy-ramp", 3, 5) is first and calls == [(5, 3)]  # generated once
    family.clear()
    family.arrays("toy-ramp", 3, 5)
    assert calls == [(5, 3), (5, 3)]
    info = family.info("toy-ramp")
    assert (info.name, info.description, info.source, info.splits) == ("toy-ramp", "a ramp", "numpy", ("test",))
    with pytest.raises(OODLensError, match="unknown toy set 'toy-rampp'; known: toy-ramp"):
        family.info("toy-rampp")
    with pytest.raises(OODLensError, match="has no split 'val'"):
        family.check_split("toy-ramp", "val")


@pytest.mark.parametrize("module, name", [(demo_ood, "demo-letters"), (noise, "noise-uniform")])
def test_both_families_keep_their_public_names_and_identities(module, name) -> None:
    """The modules' own names still answer, and a family's memo is the module's memo."""
    arrays = module.ood_arrays if module is demo_ood else module.noise_arrays
    assert arrays(name) is module.FAMILY.arrays(name, 0, 1000)
    with pytest.raises(OODLensError, match="unknown"):
        arrays("not-a-set")
    dataset = (module.DemoOODDataset if module is demo_ood else module.NoiseDataset)(name)
    expected = ((f"generator-v{demo_mnist.GENERATOR_VERSION}", "seed=0") if module is demo_ood
                else (f"noise-v{noise.NOISE_VERSION}", "seed=0", "n=1000"))
    assert tuple(dataset.fingerprint_items()) == expected
