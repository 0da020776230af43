"""Plain-text tables: columns padded to their widest cell, for reports printed to a terminal.

>>> from kbnn.tables import render_table
>>> print(render_table(("layer", "bits"), [("dense", "1,024"), ("out", "10")], align="lr",
...                    total=("Total", "1,034"), rules=True))
------------
layer   bits
------------
dense  1,024
out       10
------------
Total  1,034
------------

`kbnn.summary` and the export report (`kbnn.export.ExportResult.report`) both
print their tables with `render_table`.
"""

__all__ = ["render_table"]


def render_table(header, rows, align, *, total=None, rules=False, sep="  "):
    """The table as one string, lines joined by newlines (no trailing newline).

    Args:
        header: the column titles (strings).
        rows: sequences of cells, each already formatted as a string, as many
            as `header` has.
        align: one letter per column, "l" (left-aligned) or "r" (right).
        total: an optional last row (a sum), set apart by a rule if `rules`.
        rules: draw a line of dashes above and below the header and around
            the total row.
        sep: the text between two columns.

    >>> print(render_table(("a", "b"), [("x", "1"), ("yy", "22")], align="lr"))
    a    b
    x    1
    yy  22
    """
    rows = [tuple(row) for row in rows]
    table = [tuple(header), *rows, *([tuple(total)] if total is not None else [])]
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} must give 'l' or 'r' for each of the "
                         f"{len(header)} columns {tuple(header)}.")
    for row in table:
        if len(row) != len(header):
            raise ValueError(f"Row {row} has {len(row)} cells; the header has {len(header)}.")
        for cell in row:
            if not isinstance(cell, str):
                raise TypeError(f"Cell {cell!r} of row {row} is a {type(cell).__name__}; "
                                f"format it as a string first.")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row):
        return sep.join(cell.ljust(width) if a == "l" else cell.rjust(width)
                        for cell, width, a in zip(row, widths, align))

    body = [line(row) for row in rows]
    if not rules:
        return "\n".join([line(header), *body, *([line(total)] if total is not None else [])])
    rule = "-" * len(line(header))
    lines = [rule, line(header), rule, *body]
    if total is not None:
        lines += [rule, line(total)]
    return "\n".join([*lines, rule])
