"""Inspect an image: upload one (or pick a dataset sample) and score it under every method.

Every class shown says what it is the argmax of: the model's prediction (softmax of the
unmodified head) beside the top-5 table, LINe's ĉ (the full head on clipped features) in its
panel, with the model's own prediction beside it when the two differ.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd
import streamlit as st

from app import charts, fmt, resources, url_state
from ood_core.images import UPLOAD_EXTENSIONS, InvalidImageError, load_upload
from ood_core.inspect import Consensus, Inspection, class_name, inspect_image

PREDICTION_LABEL = "Model's prediction (softmax of the unmodified head)"
LINE_CLASS_LABEL = "LINe's class ĉ = argmax of the full head on the clipped features"
MODEL_CLASS_LABEL = "the model itself predicts"


class Picked(NamedTuple):
    """The image to inspect, its caption (file name or ``<dataset>[<index>]``) and its label, if known."""

    image: object  # PIL.Image.Image
    caption: str
    label: str | None = None


def consensus_line(summary: Consensus) -> str:
    """"Flagged as OOD by k of n methods at their 95 %-TPR thresholds" (+ which ones)."""
    its = "its 95 %-TPR threshold" if summary.total == 1 else "their 95 %-TPR thresholds"
    line = f"Flagged as OOD by {summary.flagged} of {fmt.count(summary.total, 'method')} at {its}"
    if summary.ood_methods:
        line += ": " + ", ".join(resources.method_title(m) for m in summary.ood_methods)
    return line + "."


def _pick_image(bench) -> Picked | None:
    """The image from the uploader or a dataset sample; None (after saying why) when there is none."""
    sources = ["Upload", "Sample from a dataset"]
    url_state.control("inspect_source", options=sources)  # URL i.src=upload|sample
    source = st.radio("Image", sources, key="inspect_source", horizontal=True)
    if source == "Upload":
        upload = st.file_uploader("Upload an image (PNG, JPEG, WebP, BMP, GIF first frame, TIFF)",
                                  type=list(UPLOAD_EXTENSIONS), key="upload")
        if upload is None:
            st.info("Upload an image, or pick a sample from a dataset.")
            return None
        try:
            return Picked(load_upload(upload.getvalue(), upload.name), upload.name)
        except InvalidImageError as error:
            st.error(str(error))
            return None
    sets = [bench.id_dataset, *bench.ood]
    cols = st.columns(2)
    url_state.control("inspect_dataset", options=sets)  # URL i.set=
    name = cols[0].selectbox("Dataset", sets, key="inspect_dataset")
    try:
        dataset = resources.get_dataset(name, "test")
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return None
    url_state.control("inspect_index", high=max(len(dataset) - 1, 0))  # URL i.idx=, clamped to the dataset
    index = cols[1].number_input(f"Index (0–{len(dataset) - 1})", 0, max(len(dataset) - 1, 0), key="inspect_index")
    image, label = dataset[int(index)]
    if image is None:
        st.error(f"{name}[{index}] is unreadable (a corrupt image, skipped by the cache too).")
        return None
    known = 0 <= label < len(bench.class_names)
    return Picked(image, f"{name}[{int(index)}]", bench.class_names[label] if known else None)


def render() -> None:
    st.header("Inspect an image")
    selected = resources.selected()
    if selected is None:
        return
    bench, oods, methods = selected
    try:
        model = resources.get_model(bench.model_key, bench.model_fingerprint)
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return
    st.info(f"**{model.name} expects** {model.input_note}. An image far from that is what OOD detection is "
            "for; compare the upload with what the model sees after its transform.")
    picked = _pick_image(bench)
    if picked is None:
        return
    try:
        id_scores, usable = {}, []
        for method in methods:
            try:
                id_scores[method] = resources.evaluate(bench, method, None, oods).id_scores
                usable.append(method)
            except Exception as error:  # noqa: BLE001
                st.warning(f"{method}: {resources.friendly_error(error)}")
        result = inspect_image(bench, model, picked.image, usable, id_scores=id_scores)
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return
    _images_and_prediction(model, picked, result)
    left, right = st.columns([1, 1])
    if result.verdicts:
        left.markdown(f"**{consensus_line(result.consensus)}**")
    # the verdict first and short headers: the half-width column must show it without scrolling
    rows = {resources.method_title(m): {"verdict": v.verdict, "score": v.score, "threshold": v.threshold,
                                        "ID percentile": v.percentile}
            for m, v in result.verdicts.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    if not table.empty:
        table = table.style.format({"score": fmt.number, "threshold": fmt.number, "ID percentile": fmt.RATE_FORMAT})
    left.dataframe(table, key="inspect_verdicts", width="stretch")
    if result.verdicts:
        left.caption("threshold: the score that keeps 95 % of the ID test images (below it: OOD); ID percentile: "
                     "the share of ID test images scoring at or below this image, in %.")
    for method, why in result.skipped.items():
        left.caption(f"{resources.method_title(method)}: {why}")
    if result.verdicts:
        url_state.control("inspect_method", options=list(result.verdicts))  # URL i.hist=
        shown = right.selectbox("Histogram of", list(result.verdicts), key="inspect_method",
                                format_func=resources.method_title)
        res = resources.evaluate(bench, shown, None, oods)
        verdict = result.verdicts[shown]
        right.plotly_chart(charts.score_histograms(res.id_scores, res.ood_scores, threshold=verdict.threshold,
                                                   marker=verdict.score,
                                                   title=f"{resources.method_title(shown)}: {verdict.verdict}"),
                           width="stretch", key="inspect_histogram")
    if "line" in result.verdicts:
        _line_panel(bench, result)


def _images_and_prediction(model, picked: Picked, result: Inspection) -> None:
    """The image as given and as the model sees it, side by side, then the model's top 5."""
    upload, seen, prediction = st.columns([1, 1, 2])
    upload.image(picked.image, caption=picked.caption, width=160)
    if picked.label is not None:
        upload.caption(f"label: {picked.label}")
    height, width = result.display.shape[:2]
    colour = "greyscale" if model.preprocessing.image_mode == "L" else "colour"
    seen.image(result.display, caption=f"what the model sees: {width}×{height} {colour}, after its transform",
               width=160)
    _, name, probability = result.prediction
    prediction.markdown(f"{PREDICTION_LABEL}: **{name}** (p = {fmt.rate(probability)})")
    top5 = pd.DataFrame({"class": [n for _, n, _ in result.top5], "probability": [p for _, _, p in result.top5]})
    prediction.caption("Top 5 classes of the model")
    prediction.dataframe(top5.style.format({"probability": fmt.rate}), key="inspect_top5", hide_index=True)


def _line_panel(bench, result: Inspection) -> None:
    from ood_core.scorers.line import line_explain

    st.subheader("LINe: clipped, masked and kept neurons")
    explanation = line_explain(bench.scorer("line"), result.features.to(bench.device))
    line_class = explanation["predicted_class"]
    model_class, model_name, _ = result.prediction
    line_text = f"{LINE_CLASS_LABEL}: **{class_name(bench.class_names, line_class)}**"
    if line_class != model_class:
        # Both are right: clipping activations above δ can move the argmax (the "contradiction").
        line_text += f" — {MODEL_CLASS_LABEL} **{model_name}** (argmax of the unmodified head)"
    else:
        line_text += " (the model's prediction too)"
    st.markdown(line_text)
    clipped, kept = explanation["clipped_neurons"], explanation["kept_neurons"]
    delta = explanation["delta"]
    clipping = (f"δ = {fmt.number(delta)}: {fmt.count(len(clipped), 'neuron')} clipped (activation above δ)"
                if math.isfinite(delta) else "clipping off (δ = ∞)")
    st.caption(f"{clipping}, {fmt.count(len(kept), 'neuron')} kept by ĉ's activation mask; pruned logit of ĉ "
               f"{fmt.number(explanation['pruned_logit'])}, LINe score {fmt.number(explanation['score'])}.")
    st.plotly_chart(charts.bars(explanation["contributions"], labels=[str(int(j)) for j in kept],
                                title="Contribution W_eff[ĉ, j]·h̄_j of each kept neuron", x_title="neuron",
                                y_title="contribution W_eff[ĉ, j]·h̄_j"),
                    width="stretch", key="inspect_line")


if __name__ == "__main__":
    render()
