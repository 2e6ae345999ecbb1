"""ood_core.inspect: one forward pass, per-method percentile and 95 %-TPR verdict, top-5, the
consensus (k of n methods flag the image) and each model's note of the input it expects."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ood_core import metrics
from ood_core.inspect import Consensus, MethodVerdict, consensus, inspect_image, to_display, verdict_of
from ood_core.models.base import OODModel, Preprocessing
from ood_core.registry import OODLensError
from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.scorers.base import Scorer


class TinyModel(OODModel):
    """8×8 grey input → 4-d ReLU features → 6 classes; counts forward calls."""

    def __init__(self) -> None:
        super().__init__("tiny", 6, 4, Preprocessing(8, 8, (0.5,), (0.5,), "L"),
                         class_names=tuple(f"class-{i}" for i in range(6)))
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU())
        self.fc = nn.Linear(4, 6)
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        h = self.body(x)
        return h, h * 2

    @property
    def head(self) -> nn.Linear:
        return self.fc


class EnergyLike(Scorer):
    name: ClassVar[str] = "energy-like"
    params: ClassVar[tuple[Param, ...]] = (Param("temperature", 1.0, "float", low=0.1, high=10.0),)

    def score(self, feats, **hparams):
        t = self.resolve(hparams)["temperature"]
        return t * torch.logsumexp(feats.logits / t, dim=1)


class NeedsOdin(Scorer):
    name: ClassVar[str] = "needs-odin"
    needs: ClassVar[frozenset[str]] = frozenset({"odin_logits"})

    def score(self, feats, **hparams):
        return feats.odin_logits[0].max(1).values


@dataclass
class ToyBench:
    model: TinyModel
    id_test: FeatureSet = None  # type: ignore[assignment]
    class_names: tuple[str, ...] = ()
    scorers: dict[str, Scorer] = field(default_factory=dict)

    def __post_init__(self):
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(200, 1, 8, 8, generator=gen) * 2 - 1
        with torch.no_grad():
            out = self.model(x)
        self.id_test = FeatureSet(logits=out.logits, penultimate=out.penultimate, prepool_max=out.prepool_max,
                                  labels=torch.zeros(200, dtype=torch.long))
        self.class_names = self.model.class_names
        self.model.calls = 0
        ctx = FitContext(self.model.head_weight, self.model.head_bias)
        self.scorers = {"energy-like": EnergyLike().fit(ctx), "needs-odin": NeedsOdin().fit(ctx)}

    def scorer(self, name):
        return self.scorers[name]


@pytest.fixture()
def setup():
    model = TinyModel().eval()
    image = Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), "L")
    return ToyBench(model), model, image


def test_scores_every_method_with_one_forward(setup):
    bench, model, image = setup
    result = inspect_image(bench, model, image, ["energy-like", "needs-odin"])
    assert model.calls == 1
    assert set(result.verdicts) == {"energy-like"}
    assert "odin_logits" in result.skipped["needs-odin"]

    # The one-row features are exactly the model's outputs on the transformed image.
    with torch.no_grad():
        expected = model(model.transform()(image).unsqueeze(0))
    torch.testing.assert_close(result.features.logits, expected.logits)
    torch.testing.assert_close(result.features.prepool_max, expected.prepool_max)

    verdict = result.verdicts["energy-like"]
    score = float(torch.logsumexp(expected.logits, 1))
    assert verdict.score == pytest.approx(score, rel=1e-6)
    id_scores = torch.logsumexp(bench.id_test.logits, 1).numpy()
    assert verdict.percentile == pytest.approx(100 * np.mean(id_scores <= score))
    assert verdict.threshold == pytest.approx(metrics.threshold_at_95_tpr(torch.from_numpy(id_scores)))
    assert verdict.is_id == (score >= verdict.threshold)


def test_hyperparameters_and_precomputed_id_scores_are_used(setup):
    bench, model, image = setup
    result = inspect_image(bench, model, image, ["energy-like"], hparams={"energy-like": {"temperature": 5.0}},
                           id_scores={"energy-like": torch.linspace(-100, 100, 201)})
    expected = 5.0 * torch.logsumexp(result.features.logits / 5.0, 1)
    assert result.verdicts["energy-like"].score == pytest.approx(float(expected), rel=1e-6)
    # against the supplied reference: scores in [-100, 100] in steps of 1
    assert result.verdicts["energy-like"].percentile == pytest.approx(
        100 * float((torch.linspace(-100, 100, 201) <= float(expected)).double().mean()))


def test_top5_matches_softmax(setup):
    bench, model, image = setup
    result = inspect_image(bench, model, image, ["energy-like"])
    probabilities = torch.softmax(result.features.logits[0], 0)
    assert [i for i, _, _ in result.top5] == probabilities.argsort(descending=True)[:5].tolist()
    assert all(name == f"class-{i}" for i, name, _ in result.top5)
    assert [p for _, _, p in result.top5] == sorted((p for _, _, p in result.top5), reverse=True)


def test_verdict_at_threshold_is_id():
    id_scores = torch.arange(100, dtype=torch.float32)
    threshold = metrics.threshold_at_95_tpr(id_scores)
    assert threshold == 5.0  # the 95th largest of 0..99: accepts 5..99
    assert verdict_of("m", threshold, id_scores).verdict == "ID"  # score ≥ t, as in FPR95
    assert verdict_of("m", threshold - 0.5, id_scores).verdict == "OOD"
    assert verdict_of("m", -1.0, id_scores).percentile == 0.0
    assert verdict_of("m", 1000.0, id_scores).percentile == 100.0


def test_display_undoes_normalisation(setup):
    _, model, image = setup
    shown = to_display(model.transform()(image), model.preprocessing)
    assert shown.shape == (8, 8, 3) and shown.dtype == np.uint8
    np.testing.assert_allclose(shown[..., 0].astype(int), np.asarray(image).astype(int), atol=1)


def test_no_methods_is_an_error(setup):
    bench, model, image = setup
    with pytest.raises(OODLensError):
        inspect_image(bench, model, image, [])


def _verdict(method: str, score: float, threshold: float) -> MethodVerdict:
    return MethodVerdict(method=method, score=score, percentile=50.0, threshold=threshold, is_id=score >= threshold)


def test_consensus_counts_the_methods_that_flag_the_image():
    verdicts = {"msp": _verdict("msp", 0.2, 0.9), "energy": _verdict("energy", 9.0, 7.0),
                "knn": _verdict("knn", -0.5, -0.1), "line": _verdict("line", 6.0, 6.0)}  # at t: ID
    assert consensus(verdicts) == Consensus(flagged=2, total=4, ood_methods=("msp", "knn"))
    assert consensus({}) == Consensus(flagged=0, total=0, ood_methods=())
    every = {m: _verdict(m, 0.0, 1.0) for m in ("a", "b", "c")}
    assert consensus(every).flagged == consensus(every).total == 3


def test_inspection_consensus_and_prediction_follow_its_verdicts(setup):
    bench, model, image = setup
    result = inspect_image(bench, model, image, ["energy-like", "needs-odin"])
    summary = result.consensus
    assert summary.total == 1  # the skipped method is not counted
    assert summary.flagged == (0 if result.verdicts["energy-like"].is_id else 1)
    # The model's prediction: the argmax of the unmodified head (top-5's first row).
    index, name, probability = result.prediction
    assert index == int(result.features.logits[0].argmax()) and name == f"class-{index}"
    assert probability == pytest.approx(float(torch.softmax(result.features.logits[0], 0).max()))


@pytest.mark.parametrize(("name", "expected"), [
    ("demo-cnn", "28×28 greyscale handwritten digits, light strokes on a dark background"),
    ("resnet20-cifar10", "32×32 colour photos of the 10 CIFAR-10 classes (plane, car, bird"),
    ("densenet100-cifar10", "32×32 colour photos of the 10 CIFAR-10 classes (plane, car, bird"),
    ("densenet100-cifar100", "32×32 colour photos of the 100 CIFAR-100 classes"),
    ("resnet50", "(the 1,000 ImageNet classes)"),
])
def test_every_model_says_what_input_it_expects(name: str, expected: str):
    from ood_core.models import create_model

    model = create_model(name, **({} if name == "demo-cnn" else {"pretrained": False}))
    assert expected in model.input_note
    if name == "resnet50":
        assert "224×224" in model.input_note


def test_a_model_without_a_note_gets_one_from_its_preprocessing():
    assert TinyModel().input_note == "8×8 greyscale images of its 6 training classes (resized and centre-cropped)"
