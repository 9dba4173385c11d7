"""Compare runs question for question: paired tests of per-type and overall means, and a regression gate.

Only questions answered and scored by the metric in every run are compared, so a run that failed or skipped
questions is not credited or penalised for them; the left-out questions are counted and named. Each
non-reference run is tested against the first run with a seeded paired test. `spec_mismatches` says when two
runs are not like-for-like (other data, judge, split, question subset), which no test can correct for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.metrics.aggregate import ordered_types
from harness.reporting import OVERALL, resolve_metric, run_labels
from harness.results import QuestionRecord, RunDir, RunResult, RunSpec
from harness.stats import TEST_RESAMPLES, Alternative, PairedTest, paired_bootstrap, paired_permutation
from harness.tables import ReportTable

TestName = Literal["bootstrap", "permutation"]
Verdict = Literal["ok", "FAIL", "worse, not significant", "worse, too few to test"]

SIGNIFICANCE = 0.05
"""Where the comparison table marks a p-value with "*"."""
LISTED_IDS = 10
"""How many left-out question ids a note names before it says "and N more"."""

_TESTS: dict[TestName, Callable[..., PairedTest]] = {"bootstrap": paired_bootstrap, "permutation": paired_permutation}
_TEST_NAMES: dict[TestName, str] = {
    "bootstrap": "paired bootstrap (shifted null)",
    "permutation": "paired permutation (sign-flip, exact up to 16 non-zero differences)",
}


@dataclass(frozen=True)
class ComparedRun:
    label: str
    """As in reports: what tells the runs apart of system, model and run id (`harness.reporting.run_labels`)."""
    path: Path
    result: RunResult
    answered: dict[str, QuestionRecord]
    """The run's non-failed records by question id."""

    def score(self, question_id: str, metric: str) -> float | None:
        record = self.answered.get(question_id)
        return None if record is None else record.scores.get(metric)


@dataclass(frozen=True)
class GroupComparison:
    """One question type (or the overall row) across the compared runs."""

    question_type: str
    n: int
    means: list[float]
    """Each run's mean on the group's shared questions, in run order."""
    tests: list[PairedTest]
    """For each run after the first: the paired test of it against the first."""


@dataclass(frozen=True)
class Comparison:
    runs: list[ComparedRun]
    """The reference run first."""
    metric: str
    shared: list[str]
    """Question ids answered and scored by the metric in every run."""
    dropped: dict[str, list[str]]
    """Per run label: the question ids it scored that are left out because another run did not."""
    groups: list[GroupComparison]
    """Per question type, then the overall row."""
    warnings: list[str]
    test: TestName
    resamples: int
    seed: int


@dataclass(frozen=True)
class RegressionCell:
    question_type: str
    n: int
    baseline: float
    candidate: float
    drop: float
    """(baseline - candidate) x 100: positive when the candidate is worse."""
    p_value: float
    """One-sided paired permutation test of candidate < baseline."""
    verdict: Verdict


@dataclass(frozen=True)
class RegressionReport:
    baseline: str
    candidate: str
    metric: str
    cells: list[RegressionCell]
    """Per question type, then the overall row."""
    missing: list[str]
    """Baseline questions absent or failed in the candidate."""
    unscored: list[str]
    """Questions answered in both runs but left unscored by the metric in one (e.g. an unparsable judge reply)."""
    allow_missing: bool
    passed: bool
    warnings: list[str]
    reasons: list[str]
    """One line per failure."""
    max_drop: float
    alpha: float
    seed: int
    resamples: int
    improvement: PairedTest | None = None
    """With `expect_better`: the one-sided paired permutation test of candidate > baseline, overall."""


def spec_mismatches(a: RunSpec, b: RunSpec) -> list[str]:
    """Why runs `a` and `b` are not like-for-like; system and model are expected to differ and not listed."""
    judge_a, judge_b = a.roles.get("judge"), b.roles.get("judge")
    fields: list[tuple[str, object, object]] = [
        ("task", a.task, b.task),
        ("task version", a.task_version, b.task_version),
        ("data file", _data_identity(a), _data_identity(b)),
        ("label convention", a.label_convention, b.label_convention),
        ("judge", judge_a.spec if judge_a else None, judge_b.spec if judge_b else None),
        ("metrics", a.metrics, b.metrics),
        ("limit (question subset)", a.limit, b.limit),
    ]
    if a.limit is not None or b.limit is not None:  # the seed picks the --limit subset; without one it decides nothing
        fields.append(("seed (question subset)", a.seed, b.seed))
    for key in dict.fromkeys([*a.task_options, *b.task_options]):
        fields.append((f"task option {key}", a.task_options.get(key), b.task_options.get(key)))
    for key in dict.fromkeys([*a.prompts, *b.prompts]):  # only prompts both systems have: others differ by design
        if key in a.prompts and key in b.prompts:
            fields.append((f"{key} prompt", a.prompts[key], b.prompts[key]))
    return [f"{name} differs: {_show(x)} vs {_show(y)}" for name, x, y in fields if x != y]


def compare_runs(
    paths: Sequence[Path],
    metric: str | None = None,
    *,
    seed: int = 0,
    test: TestName = "permutation",
    resamples: int = TEST_RESAMPLES,
) -> Comparison:
    """Compare two or more runs on the questions they share; the first run is the reference."""
    if len(paths) < 2:
        raise ValueError(f"a comparison needs at least two run directories; got {len(paths)}")
    runs = read_compared_runs(paths)
    metric = choose_metric(runs, metric)
    shared = _shared_scores(runs, metric)
    if not shared:
        raise ValueError(f"the runs share no question answered and scored by {metric}: nothing to compare")
    reference = runs[0]
    groups = [
        GroupComparison(
            question_type=qtype,
            n=len(ids),
            means=[sum(shared[i][j] for i in ids) / len(ids) for j in range(len(runs))],
            tests=[_paired(shared, ids, j, _TESTS[test], "two-sided", seed, resamples) for j in range(1, len(runs))],
        )
        for qtype, ids in _groups(reference, shared)
    ]
    return Comparison(
        runs=runs,
        metric=metric,
        shared=list(shared),
        dropped={run.label: [i for i in _scored_ids(run, metric) if i not in shared] for run in runs},
        groups=groups,
        warnings=[
            *_gold_evidence_warnings(runs),
            *(f"{run.label} vs {reference.label}: {w}" for run in runs[1:] for w in _mismatches(reference, run)),
        ],
        test=test,
        resamples=resamples,
        seed=seed,
    )


def comparison_table(c: Comparison) -> ReportTable:
    reference = c.runs[0].label
    others = c.runs[1:]
    deltas = [f"Δ vs {reference}" if len(others) == 1 else f"Δ {run.label} vs {reference}" for run in others]
    table = ReportTable(
        title=f"{c.metric} x100 on the questions every run answered",
        columns=["question type", "n", *(run.label for run in c.runs), *deltas],
    )
    for group in c.groups:
        table.add_row(
            group.question_type,
            str(group.n),
            *(_pct(mean) for mean in group.means),
            *(_delta(t) for t in group.tests),
            emphasized=group is c.groups[-1],  # the overall row, whatever a task names its types
        )
    table.notes = [
        f"metric {c.metric}; {len(c.shared)} questions answered and scored in every run",
        *(_left_out_note(label, ids) for label, ids in c.dropped.items() if ids),
        f"Δ = run - {reference} [95% paired bootstrap interval], two-sided p from a {_TEST_NAMES[c.test]} test; "
        f"{c.resamples} resamples, seed {c.seed}; * p < {SIGNIFICANCE}",
        *(f"warning: {w}" for w in c.warnings),
    ]
    return table


def regress(
    baseline: Path,
    candidate: Path,
    metric: str | None = None,
    *,
    max_drop: float = 1.0,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = TEST_RESAMPLES,
    allow_missing: bool = False,
    expect_better: bool = False,
) -> RegressionReport:
    """Whether `candidate` is no worse than `baseline`, per question type and overall; with `expect_better`,
    also whether it is significantly better overall (for a training run that is required to help).

    A cell fails when its mean drops by more than `max_drop` points (x100) and a one-sided paired permutation
    test of candidate < baseline gives p < alpha. A cell too small for any p below alpha (4 or fewer changed
    answers: the smallest exact one-sided p is 1/2^k) is marked "worse, too few to test" instead of passing
    silently as "worse, not significant". Baseline questions the candidate lacks fail the check unless
    `allow_missing`. `expect_better` adds a one-sided paired permutation test of candidate > baseline on all
    shared questions, which must give p < alpha.
    """
    runs = read_compared_runs([baseline, candidate])
    metric = choose_metric(runs, metric)
    base, cand = runs
    shared = _shared_scores(runs, metric)
    if not shared:
        raise ValueError(
            f"baseline {base.label} and candidate {cand.label} share no question answered and scored by {metric}:"
            " were they run on the same task and data?"
        )
    cells = [
        _regression_cell(qtype, _paired(shared, ids, 1, paired_permutation, "less", seed, resamples), max_drop, alpha)
        for qtype, ids in _groups(base, shared)
    ]
    missing = [i for i in base.answered if i not in cand.answered]
    unscored = [i for i in base.answered if i in cand.answered and i not in shared]
    reasons = [_failure_reason(cell, alpha) for cell in cells if cell.verdict == "FAIL"]
    improvement = None
    if expect_better:
        improvement = _paired(shared, list(shared), 1, paired_permutation, "greater", seed, resamples)
        if improvement.p_value >= alpha:
            reasons.append(_not_better_reason(improvement, alpha))
    if missing and not allow_missing:
        reasons.append(f"the candidate lacks {len(missing)} baseline questions (absent or failed): {_ids(missing)}")
    return RegressionReport(
        baseline=base.label,
        candidate=cand.label,
        metric=metric,
        cells=cells,
        missing=missing,
        unscored=unscored,
        allow_missing=allow_missing,
        passed=not reasons,
        warnings=_mismatches(base, cand),
        reasons=reasons,
        max_drop=max_drop,
        alpha=alpha,
        seed=seed,
        resamples=resamples,
        improvement=improvement,
    )


def regression_table(r: RegressionReport) -> ReportTable:
    table = ReportTable(
        title=f"Regression check of {r.candidate} against {r.baseline}: {r.metric} x100",
        columns=["question type", "n", "baseline", "candidate", "drop", "p (one-sided)", "verdict"],
    )
    for cell in r.cells:
        table.add_row(
            cell.question_type,
            str(cell.n),
            _pct(cell.baseline),
            _pct(cell.candidate),
            f"{cell.drop:+.2f}",
            _p(cell.p_value),
            cell.verdict,
            emphasized=cell is r.cells[-1],
        )
    table.notes = [
        f"a cell fails when it drops by more than {_points(r.max_drop)} and p < {r.alpha:g}, one-sided paired "
        f"permutation test (exact up to 16 changed answers, else {r.resamples} resamples, seed {r.seed})",
    ]
    if r.improvement is not None:
        gain = r.improvement
        table.notes.append(
            f"expected better: overall {_pct(gain.mean_a)} -> {_pct(gain.mean_b)} ({100 * gain.diff:+.2f} points),"
            f" one-sided paired permutation test of candidate > baseline: {_p_is(gain.p_value)}"
        )
    if any(cell.verdict == "worse, too few to test" for cell in r.cells):
        table.notes.append(
            f"worse, too few to test: so few answers changed that no p-value below {r.alpha:g} is possible"
        )
    if r.missing:
        allowed = "left out (allowed)" if r.allow_missing else "this fails the check"
        table.notes.append(f"the candidate lacks {len(r.missing)} baseline questions, {allowed}: {_ids(r.missing)}")
    if r.unscored:
        table.notes.append(
            f"{len(r.unscored)} questions answered in both runs but unscored in one, left out: {_ids(r.unscored)}"
        )
    table.notes += [f"warning: {w}" for w in r.warnings]
    table.notes.append("PASSED" if r.passed else "FAILED: " + "; ".join(r.reasons))
    return table


def read_compared_runs(paths: Sequence[Path]) -> list[ComparedRun]:
    """Read each run directory, labelled as in reports (`harness.reporting.run_labels`)."""
    results = [RunDir(path).read_result() for path in paths]
    return [
        ComparedRun(label=label, path=path, result=result, answered=_answered(RunDir(path).read_questions()))
        for label, path, result in zip(run_labels(results), paths, results, strict=True)
    ]


def choose_metric(runs: Sequence[ComparedRun], metric: str | None) -> str:
    return resolve_metric([run.result for run in runs], metric)


def _answered(records: Sequence[QuestionRecord]) -> dict[str, QuestionRecord]:
    """Non-failed records by question id; a later record of a question (a resumed run) replaces an earlier one."""
    return {record.question_id: record for record in records if not record.failed}


def _scored_ids(run: ComparedRun, metric: str) -> list[str]:
    return [i for i, record in run.answered.items() if record.scores.get(metric) is not None]


def _shared_scores(runs: Sequence[ComparedRun], metric: str) -> dict[str, list[float]]:
    """Each run's score, in run order, per question scored by `metric` in every run (reference run's order)."""
    shared: dict[str, list[float]] = {}
    for question_id in runs[0].answered:
        scores = [s for s in (run.score(question_id, metric) for run in runs) if s is not None]
        if len(scores) == len(runs):
            shared[question_id] = scores
    return shared


def _groups(reference: ComparedRun, shared: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Shared ids per question type (the reference run's types, in its task's order), then all of them."""
    records = [reference.answered[i] for i in shared]
    types = ordered_types(records, reference.result.spec.question_types)
    by_type = [(qtype, [r.question_id for r in records if r.question_type == qtype]) for qtype in types]
    return [*by_type, (OVERALL, list(shared))]


def _paired(
    shared: dict[str, list[float]],
    ids: Sequence[str],
    run: int,
    test: Callable[..., PairedTest],
    alternative: Alternative,
    seed: int,
    resamples: int,
) -> PairedTest:
    """`test` of run number `run` against the reference (run 0) on questions `ids`."""
    reference = [shared[i][0] for i in ids]
    other = [shared[i][run] for i in ids]
    return test(reference, other, seed=seed, resamples=resamples, alternative=alternative)


def _regression_cell(qtype: str, test: PairedTest, max_drop: float, alpha: float) -> RegressionCell:
    drop = 100 * (test.mean_a - test.mean_b)
    verdict: Verdict = "ok"
    if drop > max_drop:
        if test.p_value < alpha:
            verdict = "FAIL"
        elif test.min_p >= alpha:
            verdict = "worse, too few to test"
        else:
            verdict = "worse, not significant"
    return RegressionCell(qtype, test.n, test.mean_a, test.mean_b, drop, test.p_value, verdict)


def _failure_reason(cell: RegressionCell, alpha: float) -> str:
    return (
        f"{cell.question_type}: {_pct(cell.baseline)} -> {_pct(cell.candidate)} on {cell.n} questions, "
        f"a drop of {cell.drop:.2f} points ({_p_is(cell.p_value)}, alpha {alpha:g})"
    )


def _not_better_reason(gain: PairedTest, alpha: float) -> str:
    reason = (
        f"overall: not significantly better, {_pct(gain.mean_a)} -> {_pct(gain.mean_b)} on {gain.n} questions"
        f" ({_p_is(gain.p_value)}, alpha {alpha:g})"
    )
    if gain.min_p >= alpha:
        reason += f"; too few answers changed for any p below {alpha:g}"
    return reason


def _gold_evidence_warnings(runs: Sequence[ComparedRun]) -> list[str]:
    """A warning when runs that read the gold evidence (`RunSpec.reads_gold_evidence`) sit beside real systems."""
    oracles = [run.label for run in runs if run.result.spec.reads_gold_evidence]
    if not oracles or len(oracles) == len(runs):
        return []
    return [
        f"{', '.join(oracles)}: reads the gold evidence by design, a ceiling for its answer model, not a memory "
        "system to rank beside the others"
    ]


def _mismatches(a: ComparedRun, b: ComparedRun) -> list[str]:
    return spec_mismatches(a.result.spec, b.result.spec)


def _data_identity(spec: RunSpec) -> str | None:
    """The data file's sha256; its path when no checksum was recorded."""
    return spec.data.sha256 or spec.data.path


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _p_is(value: float) -> str:
    return "p" + ("<0.001" if value < 0.001 else f"={value:.3f}")


def _delta(test: PairedTest) -> str:
    interval = "" if test.ci is None else f" [{100 * test.ci.low:+.1f}, {100 * test.ci.high:+.1f}]"
    star = "*" if test.p_value < SIGNIFICANCE else ""
    return f"{100 * test.diff:+.2f}{interval} {_p_is(test.p_value)}{star}"


def _left_out_note(label: str, ids: Sequence[str]) -> str:
    return f"{label}: {len(ids)} scored questions left out, not answered and scored in every run: {_ids(ids)}"


def _ids(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else ""
    return ", ".join(ids[:LISTED_IDS]) + more
