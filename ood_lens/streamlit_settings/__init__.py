"""Installed, this folder holds the dashboard settings: pyproject.toml maps ``.streamlit/`` (their one
copy, at the repository root) onto this package, so the wheel ships ``.streamlit/config.toml`` as
``ood_lens/streamlit_settings/config.toml``. This file exists only so that setuptools' package
discovery lists the package; it is not installed. Read the settings with
:func:`ood_lens.cli.settings_file` (the installed copy, or ``.streamlit/config.toml`` in a checkout).
"""
