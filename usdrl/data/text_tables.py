"""Text files of numbers, one record per line (PKU-MMD and UTKinect skeletons, the joint lines of NTU files): all
numbers converted in one NumPy call, and the lines diagnosed one by one only when that fails, so that the error
names the first bad line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usdrl.data.errors import DataError


@dataclass(frozen=True)
class LineProblems:
    """How a reader words a bad line: ``str.format`` templates given ``path``, ``line`` (1-based), ``expected``
    and ``found`` (values on the line) or ``text`` (the line's first 60 characters)."""

    wrong_count: str  # a line with another number of values than expected
    not_a_number: str  # a line holding text where a number belongs
    not_finite: str  # a line holding NaN or inf
    unparsed: str  # no single line is at fault (only ``path``)


def read_text(path: Path) -> str:
    """The text of ``path``; a DataError naming the file when it cannot be read or is not text."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({error})") from error


def parse_table(text: str, rows: int, values_per_row: int, dtype: type[np.floating]) -> np.ndarray | None:
    """All numbers of ``text`` as (rows, values_per_row) of ``dtype``; None unless there are exactly that many,
    all finite (then ``line_error`` says which line is at fault)."""
    try:
        values = np.array(text.split(), dtype=dtype)
    except ValueError:
        return None
    if values.size != rows * values_per_row or not np.all(np.isfinite(values)):
        return None
    return values.reshape(rows, values_per_row)


def line_error(numbered_lines: Iterable[tuple[int, str]], values_per_line: int, dtype: type[np.floating],
               problems: LineProblems, path: Path) -> DataError:
    """The error of the first bad line among (line number 1-based, line), worded by ``problems``."""
    for number, line in numbered_lines:
        fields = line.split()
        if len(fields) != values_per_line:
            return DataError(problems.wrong_count.format(path=path, line=number, expected=values_per_line,
                                                         found=len(fields)))
        try:
            row = np.array(fields, dtype=dtype)
        except ValueError:
            return DataError(problems.not_a_number.format(path=path, line=number, text=line[:60]))
        if not np.all(np.isfinite(row)):
            return DataError(problems.not_finite.format(path=path, line=number))
    return DataError(problems.unparsed.format(path=path))
