"""Retrieval failures vs answering failures: scores split by whether retrieval covered the gold evidence."""

from __future__ import annotations

import pytest

from harness.decomposition import OVERALL, decompose, decomposition_table, evidence_retrieved
from harness.results import QuestionRecord
from harness.types import MemoryItem, Prediction


def record(
    qid: str, kind: str, evidence: list[str], sources: list[list[str]] | None, score: float | None, **extra
) -> QuestionRecord:
    retrieved = (
        None
        if sources is None
        else [MemoryItem(id=f"m{i}", text="t", source_turn_ids=s) for i, s in enumerate(sources)]
    )
    return QuestionRecord(
        sample_id="s",
        question_id=qid,
        question_type=kind,
        question="?",
        gold=["x"],
        evidence=evidence,
        prediction=Prediction(question_id=qid, answer="a", retrieved=retrieved),
        scores={"llm_judge": score},
        **extra,
    )


RECORDS = [
    record("q1", "single-hop", ["D1:1"], [["D1:1"], ["D2:2"]], 1.0),  # retrieved, right
    record("q2", "single-hop", ["D1:3"], [["D2:2"], ["D1:3"]], 0.0),  # retrieved (2nd item), wrong
    record("q3", "single-hop", ["D1:4"], [["D2:2"]], 0.0),  # missed, wrong
    record("q4", "multi-hop", ["D1:1", "D3:1"], [["D1:1"]], 1.0),  # half the evidence: missed, right
    record("q5", "multi-hop", ["S7"], [["S7:4"]], 1.0),  # a session covered by one of its turns: retrieved
    record("q6", "multi-hop", [], [["D1:1"]], 1.0),  # no gold evidence: left out
    record("q7", "multi-hop", ["D1:1"], None, 1.0),  # the system does not retrieve: left out
    record("q8", "multi-hop", ["D1:1"], [["D1:1"]], None),  # unscored: left out
    record("q9", "multi-hop", ["D1:1"], [["D1:1"]], 1.0, error="backend down"),  # failed: left out
]


def test_retrieved_means_every_gold_id_covered_by_the_top_k():
    assert evidence_retrieved(RECORDS[1], k=None) is True
    assert evidence_retrieved(RECORDS[1], k=1) is False
    assert evidence_retrieved(RECORDS[3], k=None) is False
    assert evidence_retrieved(RECORDS[4], k=None) is True
    assert [evidence_retrieved(r, None) for r in RECORDS[5:]] == [None, None, True, None]


def test_scores_split_by_retrieval_per_type_and_overall():
    split = decompose(RECORDS, "llm_judge", type_order=["single-hop", "multi-hop"])
    assert split is not None and list(split) == ["single-hop", "multi-hop", OVERALL]
    single, multi, overall = split["single-hop"], split["multi-hop"], split[OVERALL]
    assert (single.retrieved.mean, single.retrieved.n, single.missed.mean, single.missed.n) == (0.5, 2, 0.0, 1)
    assert (multi.retrieved.mean, multi.retrieved.n, multi.missed.mean, multi.missed.n) == (1.0, 1, 1.0, 1)
    assert (overall.retrieved.n, overall.missed.n) == (3, 2)
    assert overall.retrieved.mean == pytest.approx(2 / 3)
    assert overall.share_retrieved == pytest.approx(3 / 5)
    with_top_1 = decompose(RECORDS, "llm_judge", k=1)
    assert with_top_1 is not None and (with_top_1[OVERALL].retrieved.n, with_top_1[OVERALL].missed.n) == (2, 3)


def test_a_system_that_does_not_retrieve_has_no_split_and_no_table():
    full_context = [record("q1", "single-hop", ["D1:1"], None, 1.0)]
    assert decompose(full_context, "llm_judge") is None
    assert decomposition_table(["fc"], [full_context], "llm_judge") is None


def test_the_table_has_a_retrieved_and_a_missed_column_per_retrieving_run():
    full_context = [record("q1", "single-hop", ["D1:1"], None, 1.0)]
    table = decomposition_table(["rag", "fc"], [RECORDS, full_context], "llm_judge", type_order=["single-hop"])
    assert table is not None
    assert table.columns == ["question type", "rag: evidence retrieved", "rag: missed"]
    assert table.rows[0][0] == "single-hop" and table.rows[0][1].startswith("50.0") and "(n=2)" in table.rows[0][1]
    assert table.rows[-1][0] == OVERALL
    assert "rag: the evidence was retrieved for 60.0% of the questions split" in table.notes


async def test_a_rag_run_directory_is_split_as_report_shows_it(tmp_path):
    from support import config, mock_model, oracle

    from harness.decomposition import runs_decomposition_table
    from harness.runner import run

    await run(
        config(tmp_path, system="rag", embedder="hashing", metrics=["exact_match"]),
        models={"model": mock_model(oracle(wrong_types={"temporal"}))},
    )
    table = runs_decomposition_table([tmp_path / "toy" / "rag" / "r1"])
    assert table is not None
    rows = {row[0]: row[1:] for row in table.rows}
    # toy histories are short: retrieval covers every question's evidence; the oracle misses temporal ones
    assert rows["single-hop"][0].startswith("100.0") and rows["temporal"][0].startswith("0.0")
    assert rows[OVERALL][0].endswith("(n=6)") and rows[OVERALL][1] == "-"


async def test_report_and_compare_show_the_split_for_retrieving_systems_only(tmp_path, capsys):
    from support import config, mock_model, oracle

    from harness.cli import main
    from harness.runner import run

    for system in ("rag", "full-context"):
        await run(
            config(tmp_path, system=system, embedder="hashing", metrics=["exact_match"]),
            models={"model": mock_model(oracle())},
        )
    rag, full_context = (str(tmp_path / "toy" / system / "r1") for system in ("rag", "full-context"))
    assert main(["report", rag, "--format", "md"]) == 0
    assert "covered the gold evidence" in capsys.readouterr().out
    assert main(["report", full_context, "--format", "md"]) == 0
    assert "covered the gold evidence" not in capsys.readouterr().out
    assert main(["compare", full_context, rag, "--format", "md"]) == 0
    shown = capsys.readouterr().out
    assert "rag: evidence retrieved" in shown and "full-context: evidence retrieved" not in shown
