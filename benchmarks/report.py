"""Markdown rendering of benchmark results: the tables and target checks each script returns.

A script's ``run(quick)`` result may hold ``"tables"`` (title, columns, rows, optional
note) and ``"checks"`` (what, measured, target, ok); see benchmarks/README.md.
"""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    """A number as people read it: 12,345 for counts, 3 significant digits for fractions."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def table(t: dict[str, Any]) -> str:
    """One result table as Markdown: its title in bold, the grid, then its note in italics."""
    lines = [f"**{t['title']}**", ""] if t.get("title") else []
    lines.append("| " + " | ".join(cell(c) for c in t["columns"]) + " |")
    lines.append("|" + "|".join(" --- " for _ in t["columns"]) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t["rows"]]
    if t.get("note"):
        lines += ["", f"_{t['note']}_"]
    return "\n".join(lines)


def checks_table(checks: list[dict[str, Any]]) -> str:
    """The issue's numbers to reach, measured: one row per check."""
    rows = [[c["what"], c["measured"], c["target"], "✅" if c["ok"] else "❌"] for c in checks]
    return table({"columns": ["target", "measured", "to reach", "met"], "rows": rows})


def render_tables(result: dict[str, Any]) -> str:
    """All tables of one script's result, for printing or the report."""
    parts = [table(t) for t in result.get("tables", [])]
    if result.get("checks"):
        parts.append(checks_table(result["checks"]))
    return "\n\n".join(parts)
