"""bench/regenerate.py's text logic: README markers, tables pulled from script output, the headline
merge and --check's verdicts. Pure text: no benchmark runs here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import regenerate  # noqa: E402
from _readme import (  # noqa: E402
    MarkerError,
    find_blocks,
    markdown_tables,
    merge_headline,
    pick_tables,
    replace_block,
    script_of_row,
    table_rows,
)

TABLE_A = "| a | b |\n|---|---|\n| 1 | 2 |"
TABLE_B = "| a | b |\n|---|---|\n| 3 | 4 |\n| 5 | 6 |"
DOC = f"""# title

prose above

<!-- bench:bench_query -->

{TABLE_A}

<!-- /bench -->

prose between

<!-- bench:headline -->

| what | measured | script |
|---|---|---|
| 1M vectors | old figure | `bench/bench_ann.py --n 1000000` |
| eval | 0.853 | `lookalike eval` |

<!-- /bench -->
tail
"""


def test_blocks_are_found_with_their_bodies() -> None:
    blocks = find_blocks(DOC)
    assert list(blocks) == ["bench_query", "headline"]
    assert blocks["bench_query"].body == TABLE_A
    assert table_rows(blocks["headline"].body)[1] == "| eval | 0.853 | `lookalike eval` |"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- bench:x -->\n| a |\n", "never closed"),
        ("<!-- bench:x -->\n<!-- bench:y -->\n<!-- /bench -->\n", "opens inside"),
        ("text\n<!-- /bench -->\n", "without an opening"),
        ("<!-- bench:x -->\n<!-- /bench -->\n<!-- bench:x -->\n<!-- /bench -->\n", "twice"),
        ("<!-- bench: x -->\n<!-- /bench -->\n", "malformed"),
    ],
)
def test_markers_that_do_not_pair_up_are_refused(text: str, message: str) -> None:
    with pytest.raises(MarkerError, match=message):
        find_blocks(text)


def test_replacing_a_block_keeps_everything_outside_it() -> None:
    new = replace_block(DOC, "bench_query", TABLE_B + "\n\n")
    assert find_blocks(new)["bench_query"].body == TABLE_B
    before, after = DOC.split(TABLE_A)
    assert new.startswith(before) and new.endswith(after)
    assert replace_block(new, "bench_query", TABLE_A) == DOC  # and back, byte for byte
    with pytest.raises(MarkerError, match="no block"):
        replace_block(DOC, "bench_missing", TABLE_A)


def test_tables_are_pulled_from_script_output_by_heading_or_header() -> None:
    output = f"loading...\n\n### Query latency (2 cores)\n\n{TABLE_A}\n\nnote\n\n### server process\n\n{TABLE_B}\n"
    tables = markdown_tables(output)
    assert tables == [("### Query latency (2 cores)", TABLE_A), ("### server process", TABLE_B)]
    assert pick_tables(output, ("server process", "Query latency")) == [TABLE_B, TABLE_A]
    assert pick_tables(output, ("| a | b |",)) == [TABLE_A]  # by header row when there is no heading
    with pytest.raises(LookupError, match="Ingest"):
        pick_tables(output, ("Ingest",))
    assert markdown_tables("| not | a table |\nplain line\n") == []  # no |---| rule: not a table


def test_headline_rows_are_replaced_only_for_scripts_that_printed_one() -> None:
    body = find_blocks(DOC)["headline"].body
    assert script_of_row(table_rows(body)[0]) == "bench_ann"
    assert script_of_row(table_rows(body)[1]) == ""
    new_row = "| 1M vectors | new figure | `bench/bench_ann.py --n 1000000` |"
    merged, replaced = merge_headline(body, {"bench_ann": new_row, "bench_ood": "| never used | x | y |"})
    assert replaced == ["bench_ann"]
    assert table_rows(merged) == [new_row, "| eval | 0.853 | `lookalike eval` |"]
    with pytest.raises(MarkerError, match="must start"):
        merge_headline(TABLE_A, {})


def test_apply_rewrites_changed_blocks_and_check_reports_each(capsys: pytest.CaptureFixture[str]) -> None:
    results = {"bench_query": (TABLE_B, None), "bench_ann": ("", "| 1M vectors | new | `bench/bench_ann.py` |")}
    new, changed = regenerate.apply(DOC, results)
    assert changed == ["bench_query", "headline"]
    assert regenerate.apply(new, results) == (new, [])  # a second run changes nothing

    assert regenerate.check(new, results, ["bench_query", "bench_ann"]) == 0
    assert regenerate.check(DOC, results, ["bench_query", "bench_ann"]) == 2
    out = capsys.readouterr().out
    assert "bench_query: DIFFERS" in out and "+| 5 | 6 |" in out
    assert "headline row of bench_ann: DIFFERS" in out
    assert "written by hand (no bench script named)" in out
    assert regenerate.check(DOC, {"bench_query": None}, ["bench_query"]) == 1
    assert "not recorded" in capsys.readouterr().out


def test_every_readme_table_sits_in_a_block_with_a_registered_script() -> None:
    readme = (BENCH.parent / "README.md").read_text()
    blocks = find_blocks(readme)
    assert set(blocks) == {b.name for b in regenerate.BENCHES if b.picks} | {"headline"}
    inside = set()
    for block in blocks.values():
        start = readme.index(block.body)
        inside.update(range(start, start + len(block.body)))
    offset, previous = 0, ""
    for line in readme.split("\n"):
        if line.startswith("|---") and previous != "| folder | what lives there |":  # the one non-measurement
            assert offset in inside, f"a README table outside any bench block: {previous[:60]}"
        offset, previous = offset + len(line) + 1, line


def test_the_1m_headline_row_is_what_bench_ann_prints_for_the_recorded_run() -> None:
    """The README's 1M row, as bench_ann.py formats the run recorded in docs/scale.md (2026-11-29)."""
    import bench_ann

    recorded = {
        "config": "auto",
        "kind": "ivf4096,sq8",
        "probes": {"low": 5, "high": 88, "delta": 0.01, "mean": 5.9},
        "rerank": 64,
        "build_s": 210.0,
        "reopen_s": 1.03,
        "p50_ms": 2.8,
        "p99_ms": 6.1,
        "qps": 838.0,
        "recall10": 0.986,
        "rss_gib": 2.30,
        "anon_gib": 0.06,
        "file_gib": 2.24,
        "index_disk_gib": 1.22,
    }
    readme = (BENCH.parent / "README.md").read_text()
    rows = [r for r in table_rows(find_blocks(readme)["headline"].body) if script_of_row(r) == "bench_ann"]
    assert rows == [bench_ann.headline_row(recorded, 1_000_000, 500)]
    scale = (BENCH.parent / "docs" / "scale.md").read_text()
    assert bench_ann.markdown_row(recorded).replace("**", "") in scale.replace("**", "")


def test_bench_model_choice_formats_the_readme_table_from_its_figures() -> None:
    """Fed the quality figures of the README's (third-session) table, the script's README table gives
    the same cells, bold marks included; images/s is measured by the script itself now."""
    sys.path.insert(0, str(BENCH.parent / "tools"))
    import bench_model_choice

    readme = (BENCH.parent / "README.md").read_text()
    rows = [
        [c.strip() for c in r.strip("|").split("|")] for r in table_rows(find_blocks(readme)["bench_model_choice"].body)
    ]
    plain = {r[0].replace("**", "").replace(" (default)", ""): [c.replace("**", "") for c in r] for r in rows}
    results = {
        name: {
            "none": (c[1], c[2], c[3], c[4]),
            "center": (c[5].split(" / ")[0], c[5].split(" / ")[1], "–", c[5].split(" / ")[2]),
            "whiten": (c[6].split(" / ")[0], c[6].split(" / ")[1], "–", c[6].split(" / ")[2]),
        }
        for name, c in plain.items()
    }
    speeds = {name: 100.0 for name in results}
    printed = bench_model_choice.readme_rows(results, speeds)
    assert [r[:7] for r in printed] == [r[:7] for r in rows]


def test_the_ood_headline_row_has_the_readme_format() -> None:
    """bench_ood's headline row, fed the figures of the README's row, is that row."""
    import numpy as np

    sys.path.insert(0, str(BENCH.parent / "tools"))
    import bench_ood

    def kind(fixed_accept: float, knn_accept: float) -> tuple:
        n = 100  # arrays of no_match flags: accepted = not flagged
        return (None, np.arange(n) >= round(fixed_accept * n), np.arange(n) >= round(knn_accept * n), None)

    mats = {"clipart": kind(1.0, 0.38), "icons": kind(0.47, 0.03), "fashion-mnist": kind(0.6, 0.03)}
    mats |= {"astronomy": kind(0.9, 0.38), "noise": kind(0.5, 0.0)}
    row = bench_ood.headline_row(0.96, 1.0, mats, list(mats))
    readme = (BENCH.parent / "README.md").read_text()
    assert row in table_rows(find_blocks(readme)["headline"].body)


def test_the_calibration_headline_row_has_the_readme_format() -> None:
    sys.path.insert(0, str(BENCH.parent / "tools"))
    import bench_calibration

    readme = (BENCH.parent / "README.md").read_text()
    row = bench_calibration.headline_row(ece=0.0301, precision=0.9836, recall=0.641)
    assert row in table_rows(find_blocks(readme)["headline"].body)


def test_a_run_records_its_tables_and_keeps_readme_edits_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run takes minutes: README edits made during it survive, and the recording reads back."""
    readme = tmp_path / "README.md"
    readme.write_text(DOC)
    output = f"### Query latency (2 cores)\n\n{TABLE_B}\n"

    def fake_run(bench: regenerate.Bench, quick: bool) -> tuple[str, float]:
        readme.write_text(readme.read_text().replace("prose between", "prose edited during the run"))
        return output, 1.0

    monkeypatch.setattr(regenerate, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(regenerate, "run_script", fake_run)
    monkeypatch.setattr(sys, "argv", ["regenerate.py", "--only", "bench_query", "--readme", str(readme)])
    regenerate.main()
    text = readme.read_text()
    assert "prose edited during the run" in text
    assert find_blocks(text)["bench_query"].body == TABLE_B
    assert regenerate.recorded(regenerate.BY_NAME["bench_query"]) == (TABLE_B, None)
    assert (
        "recorded by bench/regenerate.py: `python bench/bench_query.py`"
        in (tmp_path / "results" / "bench_query.md").read_text()
    )
    monkeypatch.setattr(
        sys, "argv", ["regenerate.py", "--check", "--from-cache", "--only", "bench_query", "--readme", str(readme)]
    )
    with pytest.raises(SystemExit) as done:
        regenerate.main()
    assert done.value.code == 0 and "bench_query: same" in capsys.readouterr().out


def test_bench_query_times_methods_in_turn_and_measures_recall_against_an_exact_scan() -> None:
    import numpy as np

    sys.path.insert(0, str(BENCH.parent / "tools"))
    import bench_query

    order: list[tuple[str, int]] = []
    calls = {name: (lambda i, name=name: order.append((name, i)) or f"{name}{i}") for name in ("flat", "original")}
    ms, answers = bench_query.interleaved(calls, {"flat": 3, "original": 2}, warmup=1)
    assert order == [
        ("flat", 0),
        ("original", 0),
        ("flat", 0),
        ("original", 0),
        ("flat", 1),
        ("original", 1),
        ("flat", 2),
    ]
    assert answers == {"flat": ["flat0", "flat1", "flat2"], "original": ["original0", "original1"]}  # no warm-up
    assert [len(v) for v in ms.values()] == [3, 2]

    rng = np.random.default_rng(0)
    vectors = rng.random((50, 8), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors, as the bench's are
    queries = rng.random((4, 8), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = bench_query.exact_top(vectors, queries)
    assert (truth[:, 0] == np.argmax(queries @ vectors.T, axis=1)).all()
    assert bench_query.recall(truth.tolist(), truth) == 1.0
    assert bench_query.recall([list(t[:5]) + [-1] * 5 for t in truth], truth) == 0.5
    # the original's answers are file names: its recall is read from them like any other method's
    items = [(v, f"img{i:07d}.jpg") for i, v in enumerate(vectors)]
    names = [bench_query.baseline_search(items, q, k=10) for q in queries]
    assert bench_query.recall([[int(n[3:10]) for n in row] for row in names], truth) == 1.0
