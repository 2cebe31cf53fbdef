"""Sizes on the command line: ``--gpu_mem 20G``."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?)?", re.IGNORECASE)
_UNIT_MIB = {"k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024), "t": Fraction(1024 * 1024)}


def parse_size(text: str) -> int:
    """``--gpu_mem`` size in MiB: ``20G``, ``20GB``, ``20GiB``, ``512M``, ``1.5G``; a bare number is MiB.

    Units are binary whatever their spelling (GB = GiB), as nvidia-smi counts; fractions round up.
    """
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r} (expected e.g. 20G, 512M or a number of MiB)")
    number, unit = match.group(1), (match.group(2) or "m").lower()
    mib = math.ceil(Fraction(number) * _UNIT_MIB[unit])
    if mib <= 0:
        raise ValueError(f"invalid size {text!r}: it must be more than zero")
    return mib
