"""Inspect an image: upload one (or pick a dataset sample) and score it under every method."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, resources
from ood_core.images import UPLOAD_EXTENSIONS, InvalidImageError, load_upload
from ood_core.inspect import inspect_image


def _pick_image(bench):
    """(PIL image, caption) from the uploader or a dataset sample; None when there is none."""
    source = st.radio("Image", ["Upload", "Sample from a dataset"], key="inspect_source", horizontal=True)
    if source == "Upload":
        upload = st.file_uploader("Upload an image (PNG, JPEG, WebP, BMP, GIF first frame, TIFF)",
                                  type=list(UPLOAD_EXTENSIONS), key="upload")
        if upload is None:
            st.info("Upload an image, or pick a sample from a dataset.")
            return None
        try:
            return load_upload(upload.getvalue(), upload.name), upload.name
        except InvalidImageError as error:
            st.error(str(error))
            return None
    sets = [bench.id_dataset, *bench.ood]
    cols = st.columns(2)
    name = cols[0].selectbox("Dataset", sets, key="inspect_dataset")
    try:
        dataset = resources.get_dataset(name, "test")
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return None
    index = cols[1].number_input(f"Index (0–{len(dataset) - 1})", 0, max(len(dataset) - 1, 0), 0, key="inspect_index")
    image, label = dataset[int(index)]
    if image is None:
        st.error(f"{name}[{index}] is unreadable (a corrupt image, skipped by the cache too).")
        return None
    caption = f"{name}[{index}]" + (f", label {bench.class_names[label]}" if 0 <= label < len(bench.class_names) else "")
    return image, caption


def render() -> None:
    st.header("Inspect an image")
    selected = resources.selected()
    if selected is None:
        return
    bench, oods, methods = selected
    picked = _pick_image(bench)
    if picked is None:
        return
    image, caption = picked
    try:
        model = resources.get_model(bench.model_key, bench.model_fingerprint)
        id_scores, usable = {}, []
        for method in methods:
            try:
                id_scores[method] = resources.evaluate(bench, method, None, oods).id_scores
                usable.append(method)
            except Exception as error:  # noqa: BLE001
                st.warning(f"{method}: {resources.friendly_error(error)}")
        result = inspect_image(bench, model, image, usable, id_scores=id_scores)
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return
    left, right = st.columns([1, 2])
    left.image(image, caption=f"{caption} (as uploaded)", width=160)
    left.image(result.display, caption="what the model sees (after its transform)", width=160)
    left.dataframe({"class": [n for _, n, _ in result.top5], "probability": [p for _, _, p in result.top5]},
                   key="inspect_top5")
    rows = {resources.method_title(m): {"score": v.score, "percentile among ID test": v.percentile,
                                        "threshold (95 % TPR)": v.threshold, "verdict": v.verdict}
            for m, v in result.verdicts.items()}
    right.dataframe(pd.DataFrame.from_dict(rows, orient="index"), key="inspect_verdicts", width="stretch")
    for method, why in result.skipped.items():
        right.caption(f"{method}: {why}")
    if result.verdicts:
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


def _line_panel(bench, result) -> None:
    from ood_core.scorers.line import line_explain

    st.subheader("LINe: clipped, masked and kept neurons")
    explanation = line_explain(bench.scorer("line"), result.features.to(bench.device))
    predicted = explanation["predicted_class"]
    name = bench.class_names[predicted] if predicted < len(bench.class_names) else str(predicted)
    st.caption(f"Predicted class {name}; δ = {explanation['delta']:g}; "
               f"{len(explanation['clipped_neurons'])} neurons clipped, {len(explanation['kept_neurons'])} kept "
               f"by the class's activation mask; pruned logit {explanation['pruned_logit']:.3f}, "
               f"score {explanation['score']:.3f}.")
    kept = explanation["kept_neurons"]
    st.plotly_chart(charts.bars(explanation["contributions"], labels=[str(int(j)) for j in kept],
                                title="Contribution W_eff[ĉ, j]·h̄_j of each kept neuron", x_title="neuron"),
                    width="stretch", key="inspect_line")


if __name__ == "__main__":
    render()
