"""One set of CLI options: every command that opens an index honours ``--db`` and ``$LOOKALIKE_DB``,
and every failure is one line naming the command-line option that fixes it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_picture
from lookalike import Index
from lookalike.cli.app import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src" / "lookalike"


@pytest.fixture(scope="module")
def env_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("envdb")
    pictures = root / "pictures"
    pictures.mkdir()
    for i in range(6):
        make_picture(i).save(pictures / f"p{i}.jpg", quality=90)
    make_picture(3).save(pictures / "p3-copy.png")  # a near copy, so dups has a group to report
    db = root / "only-by-env"
    with Index.open(db, model="dhash") as index:
        index.add([pictures])
    return db


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["info", "--json"], lambda doc: doc["count"] == 7),
        (["calibrate", "--show", "--json"], lambda doc: doc["status"] in ("fallback", "none", "ok")),
        (["search", "--id", "1", "--json"], lambda doc: len(doc["queries"][0]["results"]) == 4),
        (["dups", "--json"], lambda doc: any(g["duplicates"] for g in doc["groups"])),
        (["repair", "--json"], lambda doc: doc["dropped"] == []),
    ],
)
def test_every_index_command_honours_lookalike_db(env_index: Path, tmp_path: Path, args: list[str], check) -> None:
    # Run from an empty folder: without the variable, each command would look for ./lookalike.db.
    result = runner.invoke(app, args, env={"LOOKALIKE_DB": str(env_index)})
    assert result.exit_code == 0, result.output
    assert check(json.loads(result.stdout)), result.stdout


def test_sweep_honours_lookalike_db(env_index: Path, tmp_path: Path) -> None:
    example = tmp_path / "example.png"
    make_picture(3).save(example)
    result = runner.invoke(app, ["sweep", "--like", str(example), "--json"], env={"LOOKALIKE_DB": str(env_index)})
    assert result.exit_code == 0, result.output
    assert any(m["path"].endswith("p3.jpg") for m in json.loads(result.stdout)["matches"])


def test_the_option_beats_the_variable(env_index: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["info", "--db", str(tmp_path / "absent"), "--json"], env={"LOOKALIKE_DB": str(env_index)}
    )
    assert result.exit_code == 2 and "absent" in result.output


def test_a_library_error_names_the_option_that_fixes_it(env_index: Path) -> None:
    result = runner.invoke(
        app, ["index", str(env_index.parent / "pictures"), "--db", str(env_index), "--model", "phash"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "(see --model, --db)" in lines[0]


def test_library_messages_name_settings_not_command_line_flags() -> None:
    """Strings the library raises with never spell a CLI flag: the CLI adds those (see errors.py)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in ("cli", "web"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    text = part.value if isinstance(part, ast.Constant) else None
                    if isinstance(text, str) and re.search(r"(?<![\w-])--[a-z]", text):
                        offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {part.value!r}")
    assert not offenders, "\n".join(offenders)
