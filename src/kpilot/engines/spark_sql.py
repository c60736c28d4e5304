"""Rewrite the string literals of compiled SQL for Spark's parser.

The compiler writes ANSI string literals (``lit()``): a quote inside is doubled and a backslash is an
ordinary character. Spark's lexer treats a backslash inside a literal as an escape (``'a\\'`` does not even
end the literal), so the same text would change meaning or fail to parse. This module re-spells every
literal for Spark: backslash becomes ``\\\\`` and a quote becomes ``\\'``. Nothing else in the statement
changes, so DuckDB keeps receiving exactly what the compiler wrote.

Lexing rules of the input (all the compiler emits): ``'...'`` string literals with ``''`` for a quote,
``"..."`` quoted identifiers with ``""`` for a double quote, ``--`` comments to the end of the line and
``/* */`` block comments. Quotes inside identifiers and comments are left alone.
"""

from __future__ import annotations

__all__ = ["spark_literal", "to_spark_sql"]


def spark_literal(text: str) -> str:
    """``text`` as a Spark SQL string literal that every Spark version reads back unchanged."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_spark_sql(sql: str) -> str:
    """``sql`` with every ANSI string literal re-spelled for Spark (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            value, i = _read_quoted(sql, i, "'")
            out.append(spark_literal(value))
        elif ch == '"':
            _, end = _read_quoted(sql, i, '"')
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise ValueError("compiled SQL has an unterminated /* comment")
            out.append(sql[i : end + 2])
            i = end + 2
        else:
            # copy the run of plain text up to the next character that may start a token we handle
            j = i + 1
            while j < n and sql[j] not in "'\"-/":
                j += 1
            out.append(sql[i:j])
            i = j
    return "".join(out)


def _read_quoted(sql: str, start: int, quote: str) -> tuple[str, int]:
    """The unescaped content of the quoted token at ``start`` and the index just after it."""
    parts: list[str] = []
    i = start + 1
    while True:
        end = sql.find(quote, i)
        if end < 0:
            raise ValueError(f"compiled SQL has an unterminated {quote} quote at offset {start}")
        parts.append(sql[i:end])
        if sql.startswith(quote * 2, end):
            parts.append(quote)
            i = end + 2
            continue
        return "".join(parts), end + 1
