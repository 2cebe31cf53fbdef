"""Hypothesis strategies for the values msgpack carries losslessly (lists, not tuples; no NaN,
which is never equal to itself): shared by the protocol's and the client codec's tests."""

from __future__ import annotations

from hypothesis import strategies as st

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)


def nested(max_size: int, max_leaves: int, key_size: int | None = None) -> st.SearchStrategy[object]:
    """Scalars, and lists and maps of them, nested."""
    return st.recursive(
        SCALARS,
        lambda inner: (
            st.lists(inner, max_size=max_size)
            | st.dictionaries(st.text(max_size=key_size), inner, max_size=max_size)
        ),
        max_leaves=max_leaves,
    )
