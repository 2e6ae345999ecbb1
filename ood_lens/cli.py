"""``ood-lens``: the dashboard and the two command-line tools behind one command.

* ``ood-lens app [STREAMLIT_OPTION ...]``: ``python -m streamlit run app/main.py`` with the
  dashboard settings of ``.streamlit/config.toml`` (passed as flags, so they apply from any
  working directory; options given here come after them and win).
* ``ood-lens precompute ...``: ``python -m precompute ...``
* ``ood-lens report ...``: ``python -m ood_core.report ...``

``precompute`` and ``report`` get the remaining arguments unchanged, and return their own exit
status (``ood-lens report --help`` is the report's own help). ``app`` runs Streamlit's own
command line in this process, so Ctrl-C / SIGTERM go straight to Streamlit's handlers (the
server stops cleanly, no orphaned child) and the exit status is Streamlit's.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ood_core import __version__, cli_args

PACKAGE_DIR = Path(__file__).resolve().parent
DASHBOARD = PACKAGE_DIR.parent / "app" / "main.py"  # app/ is installed next to ood_lens/, as in a checkout
# The one settings file, .streamlit/config.toml: pyproject.toml maps it into the wheel as
# ood_lens/streamlit_settings/config.toml; a checkout reads it in place.
SETTINGS_FILES = (PACKAGE_DIR / "streamlit_settings" / "config.toml",
                  PACKAGE_DIR.parent / ".streamlit" / "config.toml")

DESCRIPTION = """\
OOD Lens: score out-of-distribution detectors on one feature cache.

commands:
  app         open the dashboard (python -m streamlit run app/main.py with the settings
              of .streamlit/config.toml); other arguments go to `streamlit run`
  precompute  build the feature cache (python -m precompute)
  report      print a benchmark report, building missing cache entries first
              (python -m ood_core.report)

`ood-lens COMMAND --help` shows that command's own options."""

EPILOG = """\
examples:
  ood-lens app                                  # the dashboard on http://localhost:8501
  ood-lens app --server.port 8599 --server.headless true
  ood-lens precompute --model demo-cnn --id demo-mnist --ood demo-noise
  ood-lens report --model demo-cnn --id demo-mnist --ood demo-noise --format markdown

The cache lives in $OOD_LENS_CACHE (default ~/.cache/ood-lens).
"""

APP_HELP = """\
usage: {prog} app [STREAMLIT_OPTION ...] [-- SCRIPT_ARG ...]

Open the OOD Lens dashboard: runs `streamlit run {dashboard}`
in this process, with the settings of {settings}
passed as flags (options given here come after them and win).

examples:
  {prog} app
  {prog} app --server.port 8599 --server.headless true
  {prog} app --theme.base dark

Every `streamlit run` option works here; list them with: python -m streamlit run --help
"""


def settings_file() -> Path:
    """The dashboard settings (``.streamlit/config.toml``, or the installed copy of it)."""
    for path in SETTINGS_FILES:
        if path.is_file():
            return path
    raise FileNotFoundError(f"dashboard settings not found: {' or '.join(map(str, SETTINGS_FILES))}")


def _flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _flag_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def settings_flags(path: Path | None = None) -> list[str]:
    """``.streamlit/config.toml`` as ``streamlit run`` flags: ``[server] maxUploadSize = 20`` →
    ``--server.maxUploadSize=20`` (a list value repeats its flag)."""
    with open(path or settings_file(), "rb") as file:
        table = tomllib.load(file)
    return [f"--{name}={_flag_value(item)}" for name, value in _flatten(table)
            for item in (value if isinstance(value, list) else [value])]


def streamlit_args(extra: Sequence[str] = ()) -> list[str]:
    """The ``streamlit`` command line for the dashboard: ``run <app/main.py> <settings> <extra>``."""
    if not DASHBOARD.is_file():
        raise FileNotFoundError(f"the dashboard script is missing: {DASHBOARD}")
    return ["run", str(DASHBOARD), *settings_flags(), *extra]


def run_streamlit(args: Sequence[str]) -> int:
    """``streamlit <args>`` through Streamlit's own CLI, in this process; returns its exit status."""
    from streamlit.web import cli as streamlit_cli

    try:
        streamlit_cli.main.main(args=list(args), prog_name="streamlit", standalone_mode=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    return 0


def _app(argv: list[str], prog: str) -> int:
    options = argv[:argv.index("--")] if "--" in argv else argv
    if "-h" in options or "--help" in options:
        try:
            settings: object = settings_file()
        except FileNotFoundError:
            settings = "(settings file not found)"
        sys.stdout.write(APP_HELP.format(prog=prog, dashboard=DASHBOARD, settings=settings))
        return 0
    try:
        args = streamlit_args(argv)
    except (FileNotFoundError, tomllib.TOMLDecodeError) as error:
        return cli_args.print_error(error)
    return run_streamlit(args)


def _precompute(argv: list[str], prog: str) -> int:
    from precompute.cli import main as precompute_main

    return precompute_main(argv)


def _report(argv: list[str], prog: str) -> int:
    from ood_core.report import main as report_main

    return report_main(argv)


COMMANDS: dict[str, Callable[[list[str], str], int]] = {
    "app": _app, "precompute": _precompute, "report": _report}


def build_parser(prog: str = "ood-lens") -> argparse.ArgumentParser:
    parser = cli_args.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=cli_args.HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="app, precompute or report")
    rest = parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG",
                               help="the command's own arguments, passed on unchanged")
    rest.required = False  # a missing COMMAND is the one thing to report
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "ood-lens") -> int:
    """Entry point of ``ood-lens`` / ``python -m ood_lens``; returns the exit status (2 with one
    ``error:`` line for an unknown or missing command; otherwise the command's own)."""
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as stop:  # --help / --version (0) or a usage error, already one line (2)
        return int(stop.code or 0)
    return COMMANDS[args.command](list(args.args), prog)


if __name__ == "__main__":
    sys.exit(main())
