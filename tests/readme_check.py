#!/usr/bin/env python3
"""The README's quickstart must be examples/quickstart.cpp, verbatim."""
import sys

readme, example = sys.argv[1], sys.argv[2]
with open(readme, encoding="utf-8") as f:
    text = f.read()
with open(example, encoding="utf-8") as f:
    code = f.read()
if "```cpp\n" + code + "```" not in text:
    sys.exit("README.md does not contain examples/quickstart.cpp verbatim")
print("README quickstart matches", example)
