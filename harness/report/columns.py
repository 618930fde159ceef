"""Plain-text tables for a terminal: each column as wide as its widest cell, two spaces apart.

The one layout of ``harness compare``'s table and its calibration, ``harness sweep``'s
closing table, ``harness predict``'s listing, ``harness run``'s closing table and the
inference latency table. Numbers read best right-aligned (their digits line up):
``right`` names those columns. Trailing spaces are cut: a last column of short values
leaves no ragged whitespace for a diff or a copy to carry.
"""

from __future__ import annotations

GAP = "  "


def aligned(rows: list[list], right: frozenset[int] | set[int] = frozenset()) -> list[str]:
    """The rows (a header first, if any) as lines; each cell shown with ``str``.

    Columns are left-aligned except those whose index is in ``right``.
    """
    text = [[str(cell) for cell in row] for row in rows]
    if not text:
        return []
    widths = [max(len(row[i]) for row in text if i < len(row)) for i in range(max(map(len, text)))]
    return [GAP.join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in text]
