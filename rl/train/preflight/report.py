"""The dry-run's report: the resolved summary, "not checked offline" items, notes and numbered problems.

Also the few helpers every check uses to word what it finds (an exception in one line, a file
parsed or a problem reported).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

EXIT_OK = 0
EXIT_PROBLEMS = 2


@dataclasses.dataclass
class Report:
    recipe: str
    summary: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    offline: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.summary.append((label, text))

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def format(self) -> str:
        loaded = any(label == "signal check" and "weights loaded" in text for label, text in self.summary)
        weights = "weights loaded only for the signal check" if loaded else "no weights loaded"
        out = [f"dry run of {self.recipe} ({weights}, nothing downloaded)"]
        width = max([len(label) for label, _ in self.summary] + [8])
        for label, text in self.summary:
            lines = text.split("\n")
            out.append(f"  {label:<{width}}  {lines[0]}")
            out.extend(f"  {'':<{width}}  {line}" for line in lines[1:])
        if self.offline:
            out.append(f"not checked offline ({len(self.offline)}):")
            out.extend(f"  - {item}" for item in self.offline)
        if self.notes:
            out.append(f"notes ({len(self.notes)}):")
            out.extend(f"  - {item}" for item in self.notes)
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out.extend(f"  {i}. {item}" for i, item in enumerate(self.problems, 1))
        else:
            out.append("problems: none")
        return "\n".join(out) + "\n"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def exc_summary(exc: BaseException) -> str:
    """`ErrorClass: first line of its message`, as problems quote a failure."""
    return f"{exc.__class__.__name__}: {first_line(exc)}"


def parsed_or_problem(report: Report, where: str, parse: Callable[[], Any], errors, kind: str,
                      valid: Callable[[Any], bool], invalid: str):
    """`parse()` if it succeeds and its result is `valid`, else None after reporting why not."""
    try:
        obj = parse()
    except errors as exc:
        report.problem(f"{where}: not valid {kind} ({first_line(exc)})")
        return None
    if not valid(obj):
        report.problem(f"{where}: {invalid}")
        return None
    return obj
