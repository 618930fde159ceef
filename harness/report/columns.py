"""Plain-text tables for a terminal: each column as wide as its widest cell, two spaces apart.

The one layout of ``harness compare``'s table, ``harness sweep``'s closing table and
``harness predict``'s listing. Trailing spaces are cut: a last column of short values
leaves no ragged whitespace for a diff or a copy to carry.
"""

from __future__ import annotations

GAP = "  "


def aligned(rows: list[list]) -> list[str]:
    """The rows (a header first, if any) as left-aligned lines; each cell shown with ``str``."""
    text = [[str(cell) for cell in row] for row in rows]
    if not text:
        return []
    widths = [max(len(row[i]) for row in text if i < len(row)) for i in range(max(map(len, text)))]
    return [GAP.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in text]
