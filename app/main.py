"""OOD Lens dashboard: the router (``streamlit run app/main.py``).

``run()`` reads the URL state once, draws the shared sidebar (model, ID set, OOD sets,
methods) and runs the page chosen with ``st.navigation``; pages live in ``app/views/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import resources, url_state  # noqa: E402

# slug (URL ``page=``), script, title, icon
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("compare", "views/compare.py", "Compare", ":material/table_chart:"),
    ("tune", "views/tune.py", "Tune", ":material/tune:"),
    ("neurons", "views/neurons.py", "Neurons", ":material/hub:"),
    ("inspect", "views/inspect.py", "Inspect an image", ":material/image_search:"),
    ("sweep", "views/sweep.py", "Sweep", ":material/grid_on:"),
)


def _keep_valid(key: str, options: list[str], default: list[str] | str) -> None:
    """Drop state values (e.g. from a stale URL) that the widget's options no longer hold."""
    state = st.session_state
    if isinstance(default, list):
        current = [v for v in state.get(key, default) if v in options]
        state[key] = current if (current or key in state) else [v for v in default if v in options]
    elif state.get(key) not in options:
        state[key] = default if default in options else options[0]


def sidebar() -> None:
    """The shared selection; every page reads it through ``resources.selection()``."""
    from ood_core.scorers import list_scorers

    configs = resources.cached_configs()
    models = list(configs)
    _keep_valid("model", models, resources.DEMO_MODEL)
    with st.sidebar:
        st.title("OOD Lens")
        model = st.selectbox("Model", models, key="model", help="The demo, plus every model the cache holds")
        ids = resources.id_datasets(configs, model) or [resources.DEMO_ID]
        _keep_valid("id", ids, resources.DEMO_ID if model == resources.DEMO_MODEL else ids[0])
        id_dataset = st.selectbox("ID dataset", ids, key="id")
        oods = resources.ood_datasets(configs, model, id_dataset)
        if "ood" in st.session_state and not set(st.session_state["ood"]) & set(oods):
            del st.session_state["ood"]  # a model switch: start from all of its OOD sets
        _keep_valid("ood", oods, list(resources.DEMO_OODS) if model == resources.DEMO_MODEL else oods)
        st.multiselect("OOD datasets", oods, key="ood", format_func=str)
        methods = [m for m in list_scorers() if not m.endswith("<name>")]
        _keep_valid("methods", methods, list(resources.DEFAULT_METHODS))
        st.multiselect("Methods", methods, key="methods")
        description = resources.dataset_description(id_dataset)
        if description:
            st.caption(f"**{id_dataset}**: {description}")


def run() -> None:
    st.set_page_config(page_title="OOD Lens", page_icon=":material/visibility:", layout="wide")
    url_state.read_once()
    url_state.keep_alive()
    pages = {slug: st.Page(path, title=title, icon=icon, url_path=slug, default=(slug == "compare"))
             for slug, path, title, icon in PAGES}
    navigation = st.navigation(list(pages.values()))
    target = url_state.initial_page()
    if target in pages and pages[target].title != navigation.title:
        st.switch_page(pages[target])
    sidebar()
    slug = next((s for s, page in pages.items() if page.title == navigation.title), "compare")
    url_state.set_page(slug)
    navigation.run()
    url_state.write()


if __name__ == "__main__":
    run()
