"""The README, the man page and --help tell the same truth."""

import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from castwall import __version__
from castwall.cli import cli
from castwall.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
MAN = (ROOT / "man" / "castwall.1").read_text()
README = (ROOT / "README.md").read_text()
MAN_TEXT = MAN.replace("\\-", "-")


def commands():
    return {name: cmd for name, cmd in cli.commands.items()}


def test_every_command_and_option_is_in_the_man_page():
    for name, cmd in commands().items():
        assert re.search(rf"^\.B {name}$", MAN, re.M), f"man page lacks a section for {name}"
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    assert opt in MAN_TEXT, f"man page lacks {opt} of {name}"
    for param in cli.params:
        for opt in param.opts:
            assert opt in MAN_TEXT, f"man page lacks global option {opt}"
    for name, group in commands().items():
        for sub, cmd in getattr(group, "commands", {}).items():
            assert f".B {name} {sub}" in MAN or f"{name} {sub}" in MAN_TEXT, f"man page lacks {name} {sub}"
            assert f"castwall {name} {sub}" in README, f"README lacks castwall {name} {sub}"
            for param in cmd.params:
                if isinstance(param, click.Option):
                    for opt in param.opts:
                        assert opt in MAN_TEXT, f"man page lacks {opt} of {name} {sub}"


def test_every_command_is_in_the_readme():
    for name in commands():
        assert f"castwall {name}" in README, name


def _codes_in(text: str, pattern: str) -> dict[int, str]:
    return {int(code): meaning.strip() for code, meaning in re.findall(pattern, text, re.M)}


def test_exit_codes_agree_everywhere():
    help_text = CliRunner().invoke(cli, ["--help"]).output
    in_help = _codes_in(help_text, r"^\s+(\d+)  (.+)$")
    in_readme = _codes_in(README, r"^\| (\d+) \| (.+) \|$")
    in_man = _codes_in(MAN_TEXT, r"^\.B (\d+)\n(.+)$")
    assert set(in_help) == {int(c) for c in ExitCode}
    assert in_help == in_readme == in_man


def test_version_in_one_place_matches_the_man_page_setup_py_and_debian_changelog():
    assert f'"castwall {__version__}"' in MAN
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == __version__
    top = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(r"^castwall \(([^)]+)\) ", top).group(1) == __version__, top  # a native package: no revision


def test_the_package_installs_the_man_page_and_depends_on_what_setup_py_requires():
    assert (ROOT / "debian" / "castwall.manpages").read_text().split() == ["man/castwall.1"]
    control = (ROOT / "debian" / "control").read_text()
    depends = re.search(r"^Depends:(.*?)^\S", control, re.M | re.S).group(1)
    suggests = re.search(r"^Suggests:(.*?)^\S", control, re.M | re.S).group(1)
    # pychromecast serves check --app alone: suggested, never required
    assert "${python3:Depends}" in depends and "pychromecast" not in depends and "python3-pychromecast" in suggests
    overrides = (ROOT / "debian" / "py3dist-overrides").read_text()
    setup_text = (ROOT / "setup.py").read_text()
    for name, _floor in re.findall(r'"(\w+)>=([\d.]+)"', setup_text):
        assert f"{name} python3-{name}; PEP386" in overrides, name


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    assert "sudo scripts/demo" in README and "sudo scripts/test" in README
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
