"""The README is the user's manual: its config reference is docs/config-reference.md, and every command is in it."""

from __future__ import annotations

from pathlib import Path

from mlwatch.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_reference_matches_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    ref = (ROOT / "docs" / "config-reference.md").read_text().split("\n", 1)[1].strip()
    ref = "\n".join("#" + line if line.startswith(("## ", "### ")) else line for line in ref.splitlines())
    start = readme.index("<!-- config-reference:start")
    section = readme[readme.index("\n", start) + 1 : readme.index("<!-- config-reference:end -->")].strip()
    assert section == ref, "README's config reference is out of date: copy docs/config-reference.md into it"


def test_every_command_is_in_the_readme_and_has_help() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        assert f"mlwatch {name}" in readme, name
        assert command.help, name
