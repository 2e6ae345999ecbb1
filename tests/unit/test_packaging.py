"""Packaging: ``pip install .`` gives the ``ood-lens`` command; ``ood_lens.cli`` dispatches to the tools.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation --no-index``) from a copy of
the working tree in pytest's tmp dir, so setuptools' ``build/`` and ``*.egg-info`` never land in
the repository.
"""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import ood_core
from ood_lens import cli

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "ood_core", "precompute", "ood_lens")  # the top-level packages the wheel ships
PLACEHOLDER = "ood_lens/streamlit_settings/__init__.py"  # lets `find` list the package; not shipped
# Not copied into the build tree: VCS, caches, earlier builds.
JUNK = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".cache", ".benchmarks",
                              ".venv", ".whl", ".gl", "build", "dist", "*.egg-info", "node_modules")
# Files on disk that are not meant to ship (editor and OS leftovers).
STRAY = re.compile(r"(^|/)(\.[^/]*|__pycache__/.*|.*\.py[co]|.*~|.*\.swp|.*\.orig)$")


def _names(requirements: list[str]) -> set[str]:
    """Normalised project names of requirement strings (``torch==2.1`` → ``torch``)."""
    names = set()
    for line in requirements:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", line).group(0)).lower())
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, zipfile.ZipFile]:
    """(the source copy the wheel was built from, the wheel)."""
    pytest.importorskip("setuptools", minversion="70.1", reason="building the wheel needs setuptools>=70.1")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=JUNK)
    out = root / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    wheels = list(out.glob("ood_lens-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        yield source, wheel


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if re.fullmatch(rf"ood_lens-[^/]+\.dist-info/{name}", n)]
    return wheel.read(path).decode()


def test_wheel_has_the_console_script(built) -> None:
    _, wheel = built
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"ood-lens": "ood_lens.cli:main"}


def test_wheel_metadata(built) -> None:
    _, wheel = built
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "ood-lens"
    assert metadata["Version"] == ood_core.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    # requirements.txt stays the pinned install; the package names the same projects, unpinned.
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    assert _names(metadata.get_all("Requires-Dist")) == _names(requirements)


def test_wheel_ships_the_packages_and_their_data(built) -> None:
    source, wheel = built
    names = set(wheel.namelist())
    for path in ("app/main.py", "app/views/compare.py", "precompute/__main__.py", "precompute/cli.py",
                 "ood_core/report.py", "ood_lens/__main__.py", "ood_lens/cli.py"):
        assert path in names, path
    for path in ("ood_core/weights/demo_cnn.safetensors", "ood_core/weights/demo_cnn.json"):
        assert wheel.read(path) == (REPO / path).read_bytes(), path
    # Every file of the four packages ships (a folder of modules needs an __init__.py, a data
    # file a package-data pattern in pyproject.toml), except the settings package's placeholder.
    on_disk = {path.relative_to(source).as_posix() for package in PACKAGES
               for path in (source / package).rglob("*") if path.is_file()}
    missing = sorted(p for p in on_disk - {PLACEHOLDER} if not STRAY.search(p) and p not in names)
    assert not missing, f"not in the wheel (an __init__.py or a package-data pattern is missing): {missing}"


def test_wheel_ships_the_dashboard_settings_from_their_one_file(built) -> None:
    _, wheel = built
    assert wheel.read("ood_lens/streamlit_settings/config.toml") == (REPO / ".streamlit/config.toml").read_bytes()
    assert PLACEHOLDER not in wheel.namelist()  # pyproject.toml maps the package onto .streamlit/
    assert not (REPO / "ood_lens/streamlit_settings/config.toml").exists()  # one copy only


def test_wheel_has_nothing_else(built) -> None:
    _, wheel = built
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert top - set(PACKAGES) == {f"ood_lens-{ood_core.__version__}.dist-info"}
    assert not any(name.startswith(("tests/", "bench/", "scripts/", "docs/")) for name in wheel.namelist())


# --- ood_lens.cli -----------------------------------------------------------------------------

def test_help_lists_the_three_commands_on_one_screen(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ood-lens ")
    for command in ("app", "precompute", "report"):
        assert re.search(rf"^  {command} ", out, re.MULTILINE), command
    assert len(out.splitlines()) <= 40


@pytest.mark.parametrize("argv", [["nope"], [], ["--nope", "report"]])
def test_usage_errors_are_one_line_with_status_2(capsys, argv: list[str]) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "ood-lens --help" in err


@pytest.mark.parametrize("command, module", [("report", "ood_core.report"), ("precompute", "precompute.cli")])
def test_help_of_a_tool_is_its_own(capsys, command: str, module: str) -> None:
    tool = pytest.importorskip(module)
    assert cli.main([command, "--help"]) == 0
    assert capsys.readouterr().out == tool.build_parser().format_help()


@pytest.mark.parametrize("command, module", [("report", "ood_core.report"), ("precompute", "precompute.cli")])
def test_tools_get_their_arguments_unchanged(monkeypatch, command: str, module: str) -> None:
    tool = pytest.importorskip(module)
    seen = []
    monkeypatch.setattr(tool, "main", lambda argv=None: seen.append(argv) or 7)
    argv = ["--model", "m", "--help-not", "-h2", "--", "x"]
    assert cli.main([command, *argv]) == 7  # the tool's own exit status
    assert seen == [argv]


def test_app_runs_streamlit_on_the_dashboard_with_its_settings(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(cli, "run_streamlit", lambda args: calls.append(args) or 3)
    extra = ["--server.port", "8599", "--server.headless", "true", "--theme.base", "dark"]
    assert cli.main(["app", *extra]) == 3
    (args,) = calls
    assert args[0] == "run"
    script = Path(args[1])
    assert script.is_absolute() and script == REPO / "app" / "main.py"
    settings = tomllib.loads((REPO / ".streamlit/config.toml").read_text())
    flags = args[2:len(args) - len(extra)]
    assert len(flags) == sum(len(section) for section in settings.values())
    assert args[len(args) - len(extra):] == extra  # after the settings, so the user's win
    # Streamlit's own command line accepts them, and reads them as the settings file says.
    streamlit_cli = pytest.importorskip("streamlit.web.cli")
    params = streamlit_cli.main_run.make_context("run", args[1:]).params
    assert params["target"] == str(script)
    assert params["server_maxUploadSize"] == settings["server"]["maxUploadSize"]
    assert params["server_showEmailPrompt"] is settings["server"]["showEmailPrompt"] is False
    assert params["browser_gatherUsageStats"] is False
    assert params["theme_primaryColor"] == settings["theme"]["primaryColor"]
    assert params["theme_font"] == settings["theme"]["font"]
    assert (params["server_port"], params["server_headless"], params["theme_base"]) == (8599, True, "dark")


def test_app_help_is_ours_and_starts_nothing(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "run_streamlit", lambda args: pytest.fail("streamlit started"))
    assert cli.main(["app", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ood-lens app ") and str(REPO / "app" / "main.py") in out


def test_streamlit_usage_errors_keep_their_status(capsys) -> None:
    pytest.importorskip("streamlit.web.cli")
    assert cli.run_streamlit(["run", str(REPO / "no-such-app.py")]) == 2  # fails before any server starts
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m_ood_lens() -> None:
    ok = subprocess.run([sys.executable, "-m", "ood_lens", "--help"], cwd=REPO, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("usage: python -m ood_lens ")
    bad = subprocess.run([sys.executable, "-m", "ood_lens", "nope"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice: 'nope'" in bad.stderr
