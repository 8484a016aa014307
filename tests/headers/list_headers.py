#!/usr/bin/env python3
"""Prints the public headers (include/kcont/*.hpp), one per line, for the
header self-containment check."""
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
for h in sorted((root / "include" / "kcont").glob("*.hpp")):
    print(h.name)
