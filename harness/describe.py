"""`describe`: what a task holds, so a user can check the data before spending money on a run."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from harness.task import TaskData


def describe_table(task: TaskData) -> Group:
    options = "".join(f"; {k}={v}" for k, v in task.options.items())
    checked = "sha256 verified" if task.data.checksum_verified else "checksum not verified"
    header = f"{task.task} ({task.version}{options})\n{task.data.path} [{task.data.origin}, {checked}]"
    table = Table()
    for column in ("question type", "questions", "samples"):
        table.add_column(column, justify="left" if column == "question type" else "right")
    per_type: dict[str, tuple[int, set[str]]] = {}
    for sample in task.samples:
        for q in sample.questions:
            n, samples = per_type.get(q.question_type, (0, set()))
            samples.add(sample.sample_id)
            per_type[q.question_type] = (n + 1, samples)
    for qtype in [t for t in task.question_types if t in per_type] + [
        t for t in per_type if t not in task.question_types
    ]:
        n, samples = per_type[qtype]
        table.add_row(qtype, str(n), str(len(samples)))
    sessions = sum(len(s.conversation.sessions) for s in task.samples)
    turns = sum(s.conversation.n_turns for s in task.samples)
    questions = sum(len(s.questions) for s in task.samples)
    table.add_section()
    table.add_row("all", str(questions), str(len(task.samples)), style="bold")
    totals = f"{len(task.samples)} samples · {sessions} sessions · {turns} turns · {questions} questions"
    return Group(Text(header), table, Text(totals))
