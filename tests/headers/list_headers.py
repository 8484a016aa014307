#!/usr/bin/env python3
"""Prints the public headers (include/kcont/**/*.hpp, relative to
include/kcont), one per line, for the header self-containment check."""
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
base = root / "include" / "kcont"
for h in sorted(base.rglob("*.hpp")):
    print(h.relative_to(base).as_posix())
