"""Text columns as NumPy arrays, cheaply: a categorical's values are taken
from its few categories, not converted one by one (``astype(str)`` on 10M
rows makes 10M strings)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def strs(col: pd.Series) -> np.ndarray:
    """``col.astype(str).to_numpy()``: an object array of str ("nan" for missing)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.array([*(str(c) for c in col.cat.categories), "nan"], dtype=object)
        return cats[col.cat.codes.to_numpy()]  # code -1 (missing) takes the last
    return np.asarray(col.astype(str).to_numpy(), dtype=object)


def eq(col: pd.Series, value: str) -> np.ndarray:
    """``col.astype(str) == value`` as a bool array, on the codes of a categorical."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
        if value not in cats:
            return np.zeros(len(col), dtype=bool)
        return col.cat.codes.to_numpy() == cats.index(value)
    return strs(col) == value


def isin(col: pd.Series, values: tuple[str, ...] | list[str]) -> np.ndarray:
    """``col.astype(str).isin(values)`` as a bool array."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
        want = [i for i, c in enumerate(cats) if c in values]
        return np.isin(col.cat.codes.to_numpy(), want)
    return np.isin(strs(col), list(values))


def codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """A text column as (int32 codes, values): equal codes, equal text
    (a missing value is "nan", as ``astype(str)``)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        c = col.cat.codes.to_numpy().astype(np.int32)
        cats = [str(x) for x in col.cat.categories]
    else:
        f, u = pd.factorize(col.astype(str), use_na_sentinel=True)
        c, cats = f.astype(np.int32), [str(x) for x in u]
    if len(c) and c.min() < 0:
        c = np.where(c < 0, len(cats), c).astype(np.int32)
        cats = [*cats, "nan"]
    return c, cats
