"""Benchmark: which judge set-up that runs here agrees with a reference judge (issue 16).

Grades the answers of a run that holds reference verdicts (`published_judge`: Zep's 1,540 LoCoMo answers graded
by gpt-4o-mini, imported with `harness score --predictions`) with every set-up, model x prompt, through
`harness.calibration.agree_with_reference`, and prints raw agreement and Cohen's kappa with the reference, the
share labelled correct, and seconds per verdict. `--limit N` takes a seeded, type-stratified N answers.

Prompts: `mem0` (the benchmark's own), `strict` (ours) and `short`, a prompt written for small models (the
facts side by side and a yes/no question; a JSON schema holds the reply to one of the two words).

    python -m harness score --task locomo --predictions ../shared/data/published/zep_locomo/zep_locomo_grades.json \\
        --system-name zep --run-id zep --output /tmp/zep
    python bench/judge_agreement.py --reference /tmp/zep/locomo/zep/zep --limit 30 \\
        --models llamacpp:qwen2.5-coder-0.5b llamacpp:smollm2-135m

Writes the figures as JSON to `--out` (default bench/out/judge_agreement.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from harness.calibration import OVERALL, REFERENCE_METRIC, agree_with_reference, reference_records
from harness.llm import GenerateConfig
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.llm.structured import JSONSchema
from harness.metrics.base import Metric
from harness.metrics.llm_judge import JUDGE_STYLES, JudgeStyle, LLMJudge, gold_text, parse_longmemeval_label
from harness.results import RunDir
from harness.types import Question

SHORT_PROMPT = """Question: {question}
Correct answer: {gold_answer}
Student answer: {generated_answer}

Does the student answer give the same information as the correct answer? Ignore wording, extra details and
how dates are written. Reply yes or no."""


class _YesNo(BaseModel):
    answer: Literal["yes", "no"]


def short_prompt(question: Question, answer: str) -> tuple[str, str] | None:
    if not question.answers:
        return None
    text = SHORT_PROMPT.format(question=question.text, gold_answer=gold_text(question), generated_answer=answer)
    return text, "short"


SHORT_STYLE = JudgeStyle(
    short_prompt,
    parse_longmemeval_label,
    "yes",
    GenerateConfig(max_tokens=10, temperature=0.0, json_schema=JSONSchema.of(_YesNo, name="verdict")),
)
STYLES: dict[str, JudgeStyle] = {"mem0": JUDGE_STYLES["mem0"], "strict": JUDGE_STYLES["strict"], "short": SHORT_STYLE}


async def setup_figures(reference: Path, spec: str, prompt: str, limit: int | None, seed: int) -> dict[str, object]:
    directory = RunDir(reference)
    records = directory.latest_questions()
    judge = build_model(spec, cache=CallCache(default_cache_path()))
    metrics: dict[str, Metric] = {prompt: LLMJudge(judge, STYLES[prompt], name=prompt)}
    started = time.perf_counter()
    try:
        report = await agree_with_reference(
            records, metrics, reference=str(reference), judge=spec, seed=seed, limit=limit
        )
    finally:
        await judge.aclose()
    seconds = time.perf_counter() - started
    overall = report.prompts[prompt][OVERALL]
    judged_correct = sum(row["correct"] for row in overall.confusion.values())
    return {
        "answers": report.answers,
        "judged": overall.n,
        "unjudged": overall.unjudged,
        "raw": None if overall.raw is None else round(overall.raw, 3),
        "kappa": None if overall.kappa is None else round(overall.kappa, 3),
        "kappa_ci": [overall.kappa_low, overall.kappa_high],
        "judge_correct_share": round(judged_correct / overall.n, 3) if overall.n else None,
        "seconds_per_verdict": round(seconds / max(1, report.answers), 2),
        "confusion": overall.confusion,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a run directory with published_judge verdicts")
    parser.add_argument("--models", nargs="+", default=["llamacpp:qwen2.5-coder-0.5b"])
    parser.add_argument("--prompts", nargs="+", choices=sorted(STYLES), default=sorted(STYLES))
    parser.add_argument("--limit", type=int, default=300, help="answers, type-stratified (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/judge_agreement.json"))
    args = parser.parse_args()
    limit = args.limit or None
    records = RunDir(args.reference).latest_questions()
    share = [r.scores[REFERENCE_METRIC] for r in reference_records(records, REFERENCE_METRIC, args.seed, limit)]
    print(f"reference: {len(share)} answers, {100 * sum(share) / len(share):.1f}% CORRECT by {REFERENCE_METRIC}")
    figures: dict[str, dict[str, object]] = {}
    for spec in args.models:
        for prompt in args.prompts:
            name = f"{spec} · {prompt}"
            figures[name] = asyncio.run(setup_figures(args.reference, spec, prompt, limit, args.seed))
            print(f"{name}: {json.dumps(figures[name])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reference": str(args.reference), "limit": limit, **figures}, indent=2))
    print(f"\n{'set-up':<44}{'raw':>8}{'kappa':>8}{'correct':>9}{'s/verdict':>11}")
    for name, row in figures.items():
        print(
            f"{name:<44}{row['raw']!s:>8}{row['kappa']!s:>8}{row['judge_correct_share']!s:>9}{row['seconds_per_verdict']!s:>11}"
        )


if __name__ == "__main__":
    main()
