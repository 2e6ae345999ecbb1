"""Fixtures of the AppTest modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def demo_app(demo_cache_root):
    """The session's demo cache (``tests/conftest.py``) as ``$OOD_LENS_CACHE``, with Streamlit's
    caches emptied before and after the module (they are shared by AppTest instances)."""
    import streamlit as st

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OOD_LENS_CACHE", str(demo_cache_root))
        st.cache_resource.clear()
        st.cache_data.clear()
        yield demo_cache_root
        st.cache_resource.clear()
        st.cache_data.clear()
