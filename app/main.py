"""OOD Lens dashboard: the router (``streamlit run app/main.py``).

``run()`` applies the address (``app/url_state.py``: on a session's first run and on Back /
Forward), draws the shared sidebar (model, ID set, OOD sets, methods), runs the page chosen
with ``st.navigation`` (the page is the URL's path) and writes the state back into the address;
pages live in ``app/views/``.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

# Before torch loads (libgomp reads it once): OpenMP threads that finish a parallel region sleep
# instead of spinning. Spinning threads fight the browser and the other sessions for the cores:
# on 2 cores a slider move's scoring took 240 ms instead of 15-20 ms (py-spy of the server).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from app import first_launch, url_state  # noqa: E402  (no torch: app.resources is imported after the splash)

# slug (the URL path, /<slug>; Compare is also /), script, title, icon
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("compare", "views/compare.py", "Compare", ":material/table_chart:"),
    ("tune", "views/tune.py", "Tune", ":material/tune:"),
    ("neurons", "views/neurons.py", "Neurons", ":material/hub:"),
    ("inspect", "views/inspect.py", "Inspect an image", ":material/image_search:"),
    ("sweep", "views/sweep.py", "Sweep", ":material/grid_on:"),
)


def sidebar() -> None:
    """The shared selection; every page reads it through ``resources.selection()``.

    Each value is settled (:func:`url_state.control`: the address's, else the session's, else
    the default) before the widgets are drawn, so a notice about the address shows in the main
    area, not in the sidebar.
    """
    from app import resources  # imports torch and ood_core: seconds on a server's first run (the splash shows)
    from ood_core.scorers import list_scorers

    configs = resources.cached_configs()
    models = list(configs)
    model = url_state.control("model", options=models,
                              default=resources.DEMO_MODEL if resources.DEMO_MODEL in models else models[0])
    ids = resources.id_datasets(configs, model) or [resources.DEMO_ID]
    id_dataset = url_state.control("id", options=ids,
                                   default=resources.DEMO_ID if resources.DEMO_ID in ids else ids[0])
    oods = resources.ood_datasets(configs, model, id_dataset)
    demo = model == resources.DEMO_MODEL
    # an empty choice ("Clear all") stays empty: the pages then ask for an OOD set
    url_state.control("ood", options=oods, default=[o for o in resources.DEMO_OODS if o in oods] if demo else oods)
    methods = [m for m in list_scorers() if not m.endswith("<name>")]
    url_state.control("methods", options=methods, default=[m for m in resources.DEFAULT_METHODS if m in methods])
    with st.sidebar:
        st.title("OOD Lens")
        st.selectbox("Model", models, key="model", help="The demo, plus every model the cache holds")
        st.selectbox("ID dataset", ids, key="id")
        st.multiselect("OOD datasets", oods, key="ood", format_func=str)
        st.multiselect("Methods", methods, key="methods")
        description = resources.dataset_description(id_dataset)
        if description:
            st.caption(f"**{id_dataset}**: {description}")


@functools.lru_cache(maxsize=1)
def favicon() -> Image.Image:
    """The tab icon, drawn here: a ``:material/...:`` or emoji page icon makes the browser fetch
    an SVG from a font CDN, and the dashboard must not send a request beyond localhost."""
    size = 64
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((2, 14, size - 3, size - 15), fill="#2563eb")        # the eye
    draw.ellipse((20, 20, size - 21, size - 21), fill="#ffffff")      # iris ring
    draw.ellipse((26, 26, size - 27, size - 27), fill="#1f2937")      # pupil
    return image


def run() -> None:
    st.set_page_config(page_title="OOD Lens", page_icon=favicon(), layout="wide")
    splash = first_launch.splash()  # the title and a status line before anything imports torch
    url_state.sync()
    url_state.keep_alive()
    # The st.Page icons are glyphs of the Material Symbols font that Streamlit serves itself
    # (static/media/MaterialSymbols-Rounded*.woff2): no request leaves localhost for them.
    pages = {slug: st.Page(path, title=title, icon=icon, url_path=slug, default=(slug == "compare"))
             for slug, path, title, icon in PAGES}
    navigation = st.navigation(list(pages.values()))
    target = url_state.initial_page()  # a legacy ?page=<slug> link; the page is the path now
    if target in pages and pages[target].title != navigation.title:
        st.switch_page(pages[target], query_params=url_state.query_without_page())
    sidebar()
    splash.clear()
    url_state.show_notices()
    navigation.run()
    url_state.write()


if __name__ == "__main__":
    run()
