import pytest

from kbnn.tables import render_table


def test_columns_pad_to_the_widest_cell_with_per_column_alignment():
    text = render_table(("name", "n", "note"), [("a", "1,000", "x"), ("long name", "7", "")],
                        align="lrl")
    assert text.split("\n") == [
        "name           n  note",
        "a          1,000  x   ",
        "long name      7      ",
    ]


def test_rules_frame_the_header_and_the_total():
    lines = render_table(("k", "v"), [("a", "1")], align="lr", total=("Total", "10"),
                         rules=True).split("\n")
    rule = "-" * len("Total  10")
    assert lines == [rule, "k       v", rule, "a       1", rule, "Total  10", rule]


def test_total_without_rules_is_the_last_line_and_sep_is_used():
    assert render_table(("k", "v"), [("a", "1")], align="lr", total=("T", "2"),
                        sep=" | ").split("\n") == ["k | v", "a | 1", "T | 2"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(header=("a", "b"), rows=[("x", "y")], align="l"), "align 'l'"),
    (dict(header=("a", "b"), rows=[("x", "y")], align="lc"), "align 'lc'"),
    (dict(header=("a", "b"), rows=[("x",)], align="ll"), "has 1 cells"),
])
def test_bad_shapes_name_the_offending_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_table(**kwargs)


def test_cells_must_be_formatted_strings():
    with pytest.raises(TypeError, match="Cell 3 .* int"):
        render_table(("a",), [(3,)], align="r")
