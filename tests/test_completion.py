"""Bash completion (completion/castwall.bash) against castwall itself, in a real bash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "completion" / "castwall.bash"


@pytest.fixture
def complete(tmp_path):
    need(None if shutil.which("bash") else "no bash")
    wrapper = tmp_path / "castwall"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m castwall "$@"\n')
    wrapper.chmod(0o755)

    def run(line: str) -> list[str]:
        words = line.split(" ")
        script = (f"source {SCRIPT}\n"
                  f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
                  "_castwall castwall\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
        done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30,
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LANG": "C.UTF-8"})
        assert done.returncode == 0, done.stderr
        return [w for w in done.stdout.splitlines() if w]

    return run


def test_commands_options_and_formats_complete(complete):
    assert complete("castwall h") == ["hints"]
    assert set(complete("castwall ")) >= {"discover", "setup", "status", "remove", "hints"}
    assert set(complete("castwall setup --allow-")) == {"--allow-routed", "--allow-public", "--allow-contested"}
    assert complete("castwall hints --format d") == ["dnsmasq"]
    assert "kea" in complete("castwall hints --format ")


def test_the_package_installs_the_script_under_the_command_name():
    line = (REPO / "debian" / "castwall.bash-completion").read_text().split()
    assert line == ["completion/castwall.bash", "castwall"]
