"""`harness view`: the static run viewer, checked from the DOM a real headless browser renders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import every_line_a_fact, make_spec, mock_model, write_run

from harness.cli import main
from harness.inputs import InputError
from harness.llm import Message
from harness.results import IngestRecord, QuestionRecord, RunDir, RunResult
from harness.runner import RunConfig, run, summarize
from harness.task import DataOptions
from harness.types import MemoryEvent, MemoryItem, Prediction, Usage
from harness.viewer import build_site, question_status
from systems.memr1.answer_agent import ANSWER_AGENT_INSTRUCTIONS

INJECTED = "<script>document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned=1\">"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's `chromium` where it can)"
)


def _record(qid: str, kind: str, answer: str, judged: float | None, *, hit: bool = False, error: str | None = None):
    retrieved = [
        MemoryItem(id="m1", text="Caroline moved to Boston", source_turn_ids=["D1:2"], score=0.9),
        MemoryItem(id="m2", text="Caroline adopted a dog", source_turn_ids=["D1:3" if hit else "D2:1"], score=0.5),
    ]
    return QuestionRecord(
        sample_id="conv-1",
        question_id=qid,
        question_type=kind,
        question=f"What about {qid}?",
        gold=["a dog"],
        evidence=["D1:3"],
        question_metadata={"question_date": "2023-05-08"},
        prediction=Prediction(
            question_id=qid,
            answer=answer,
            retrieved=retrieved,
            usage={"answer": Usage(calls=1, prompt_tokens=120, completion_tokens=7, latency_s=0.4)},
            latency_s=0.4,
            metadata={"raw_answer": f"reply: {answer}"},
        ),
        scores={} if error else {"exact_match": judged, "llm_judge": judged},
        score_details={"llm_judge": {"label": "CORRECT" if judged else "WRONG", "rationale": "judge says so"}},
        error=error,
    )


def _write(path: Path, system: str, records: list[QuestionRecord], bank: list[MemoryItem]) -> Path:
    folder = RunDir(path)
    spec = make_spec(system, question_types=["single", "multi"])
    folder.write_result(RunResult(run_id=path.name, status="finished", created_at="t", spec=spec))
    for record in records:
        folder.append_question(record)
    folder.append_ingest(
        IngestRecord(
            sample_id="conv-1",
            usage={"ingest": Usage(calls=3, prompt_tokens=900)},
            memory_items=len(bank),
            stats={"ADD": 2, "invalid_outputs": 1},
        )
    )
    folder.write_memory("conv-1", bank)
    result = folder.read_result().model_copy(update=summarize(folder, spec))
    folder.write_result(result)
    return path


BANK = [
    MemoryItem(
        id="m2",
        text="Caroline adopted a dog",
        source_turn_ids=["D1:3"],
        history=[
            MemoryEvent(op="ADD", text="Caroline wants a dog", source_turn_ids=["D1:1"]),
            MemoryEvent(op="UPDATE", text="Caroline adopted a dog", previous_text="Caroline wants a dog"),
        ],
    )
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("view")
    rag = _write(
        root / "rag",
        "rag",
        [
            _record("q1", "single", "a dog", 1.0, hit=True),
            _record("q2", "single", INJECTED, 0.0),
            _record("q3", "multi", "Boston", 0.0),
            _record("q4", "multi", "", None, error="backend down"),
            _record("q5", "multi", "maybe", None),
        ],
        BANK,
    )
    full = _write(
        root / "full",
        "full-context",
        [_record(q, "single" if q in {"q1", "q2"} else "multi", "a dog", 1.0) for q in ["q1", "q2", "q3", "q4", "q5"]],
        [],
    )
    build_site([rag, full], root / "site")
    return root / "site"


def dom(site: Path, route: str) -> str:
    """The page's DOM after its scripts ran, as headless chromium dumps it."""
    assert CHROMIUM is not None
    url = (site / "index.html").as_uri() + "#" + route
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def row_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-qid="([^"]+)"', page)


def test_status_is_failed_unjudged_correct_or_wrong():
    assert question_status(_record("q", "single", "a", 1.0), "llm_judge") == "correct"
    assert question_status(_record("q", "single", "a", 0.0), "llm_judge") == "wrong"
    assert question_status(_record("q", "single", "a", None), "llm_judge") == "unjudged"
    assert question_status(_record("q", "single", "a", 1.0, error="boom"), "llm_judge") == "failed"


def test_the_site_holds_the_runs_data_beside_the_page(site: Path):
    assert {p.name for p in site.iterdir()} >= {"index.html", "app.js", "data.js", "histories"}
    text = (site / "data.js").read_text()
    data = json.loads(text.removeprefix("window.HV_DATA = ").removesuffix(";\n"))
    rag, full = data["runs"]
    assert [q["status"] for q in rag["questions"]] == ["correct", "wrong", "wrong", "failed", "unjudged"]
    assert [item["hit"] for item in rag["questions"][0]["retrieved"]] == [[], ["D1:3"]]
    assert rag["histories"] == ["conv-1"] and full["histories"] == ["conv-1"]
    assert rag["tables"][0]["rows"][-1][0] == "overall"
    assert data["tables"] and "<script>" not in text, "model strings are JSON-escaped, never raw markup"
    assert (site / "histories" / "r0" / "0.js").read_text().startswith('HV_BANKS["r0/conv-1"]')


def test_the_cli_writes_the_site(site: Path, tmp_path: Path):
    run_dir = site.parent / "rag"
    assert main(["view", str(run_dir), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").exists()
    assert main(["view", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    assert main(["view", str(run_dir), "--output", str(tmp_path / "notes")]) == 2, "a foreign folder is left alone"
    assert (tmp_path / "notes" / "mine.txt").exists()


@needs_chromium
def test_filters_change_the_list(site: Path):
    assert row_ids(dom(site, "list")) == ["q1", "q2", "q3", "q4", "q5"]
    assert row_ids(dom(site, "list?status=wrong")) == ["q2", "q3"]
    assert row_ids(dom(site, "list?type=multi&status=failed")) == ["q4"]
    assert row_ids(dom(site, "list?q=Q5")) == ["q5"]
    assert row_ids(dom(site, "list?run=r1&status=correct")) == ["q1", "q2", "q3", "q4", "q5"]


@needs_chromium
def test_a_question_page_shows_its_retrieved_memories_with_evidence_marks(site: Path):
    page = dom(site, "q/r0/q1")
    table = page.split('<table id="retrieved">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr class="item( hit)?" data-hit="(\d)">(.*?)</tr>', table)
    assert [(hit, flag) for hit, flag, _ in rows] == [("", "0"), (" hit", "1")]
    assert "Caroline moved to Boston" in rows[0][2] and "★ D1:3" in rows[1][2]
    assert "judge says so" in page and "2023-05-08" in page and "reply: a dog" in page


@needs_chromium
def test_an_injected_script_in_a_reply_shows_as_text_and_never_runs(site: Path):
    page = dom(site, "q/r0/q2")
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=" in page
    assert "<title>harness view</title>" in page
    assert "data-pwned" not in page and "<img" not in page


@needs_chromium
def test_a_history_page_loads_its_bank_with_operation_histories(site: Path):
    page = dom(site, "h/r0/conv-1")
    bank = page.split('<table id="bank">', 1)[1]
    assert "UPDATE" in bank and "Caroline wants a dog" in bank and "ADD" in bank
    assert "invalid_outputs=1" in page


@needs_chromium
def test_two_runs_show_where_they_disagree_and_side_by_side(site: Path):
    assert row_ids(dom(site, "diff")) == ["q2", "q3", "q4", "q5"]
    assert row_ids(dom(site, "diff?all=1")) == ["q1", "q2", "q3", "q4", "q5"]
    side = dom(site, "x/q2")
    assert side.count("<section>") == 2 and "✗ wrong" in side and "✓ correct" in side


def _memory_manager(messages: list[Message]) -> str:
    """Each line becomes a fact and is ADDed (`every_line_a_fact`); every question is answered "no idea"."""
    if (reply := every_line_a_fact(messages)) is not None:
        return reply
    return "- [1]\n**Answer:** no idea" if messages[0]["content"] == ANSWER_AGENT_INSTRUCTIONS else "no idea"


@needs_chromium
async def test_a_memr1_run_shows_its_bank_with_each_items_operations(tmp_path: Path):
    chat = {"speaker_a": "Ann", "speaker_b": "Ben", "session_1_date_time": "10:00 am on 1 May, 2023"}
    chat["session_1"] = [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "My boat is called Oslo."},
        {"speaker": "Ben", "dia_id": "D1:2", "text": "I <b>love</b> sailing."},
    ]
    qa = [{"question": "What is Ann's boat called?", "answer": "Oslo", "evidence": ["D1:1"], "category": 1}]
    data = tmp_path / "chat.json"
    data.write_text(json.dumps([{"sample_id": "conv-0", "conversation": chat, "qa": qa}]))
    config = RunConfig(
        task="locomo",
        system="memr1",
        embedder="hashing",
        data=DataOptions(data_file=str(data)),
        roles={"model": "mock"},
        metrics=["exact_match"],
        output_dir=tmp_path,
        run_id="r1",
        use_cache=False,
    )
    await run(config, models={"model": mock_model(_memory_manager)})
    run_dir = tmp_path / "locomo" / "memr1" / "r1"
    site = tmp_path / "site"
    build_site([run_dir], site)
    bank = dom(site, "h/r0/conv-0").split('<table id="bank">', 1)[1]
    assert "Ann said: My boat is called Oslo." in bank and '<span class="op">ADD</span>' in bank
    assert "I &lt;b&gt;love&lt;/b&gt; sailing." in bank and "<b>" not in bank
    question = dom(site, "list?q=boat")
    assert row_ids(question) == ["conv-0/q0"] and "no idea" in question


def test_serve_binds_localhost_and_serves_the_site(site: Path, tmp_path: Path):
    command = [sys.executable, "-m", "harness", "view", str(site.parent / "rag"), "--output", str(tmp_path / "out")]
    server = subprocess.Popen([*command, "--serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+/index\.html", server.stdout.readline())
        assert url is not None
        with urllib.request.urlopen(url.group(0), timeout=10) as response:
            assert b'<script src="data.js"></script>' in response.read()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_partial_run_without_scores_still_shows_its_records(tmp_path: Path):
    run_dir = write_run(tmp_path / "partial", {"q1": None, "q2": 1.0}, failed={"q1"})
    build_site([run_dir], tmp_path / "site")
    text = (tmp_path / "site" / "data.js").read_text()
    run_data = json.loads(text.removeprefix("window.HV_DATA = ").removesuffix(";\n"))["runs"][0]
    assert run_data["tables"] == [] and [q["status"] for q in run_data["questions"]] == ["failed", "correct"]


def test_a_corrupt_memory_file_is_named_with_its_line(tmp_path: Path):
    run_dir = write_run(tmp_path / "run", {"q1": 1.0})
    (run_dir / "memory").mkdir()
    (run_dir / "memory" / "s.jsonl").write_text('{"id": "m1", "text": "ok"}\n{"id": 3}\n')
    with pytest.raises(InputError, match=r"memory/s\.jsonl: line 2: not a valid MemoryItem record"):
        build_site([run_dir], tmp_path / "site")
