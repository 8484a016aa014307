#!/usr/bin/env python3
"""Compile-fail check: compiles one translation unit that misuses kcont and
passes when the compiler rejects it with the message its `// expect:` line
records (the message a person sees). An `// expect-first:` line must be in
the FIRST error line (the first line that says "error"): the one that names
what is wrong, before any cascade.

usage: compile_fail.py SOURCE INCLUDE_DIR COMPILER [ARGS...]"""
import re
import subprocess
import sys


def main():
    source, include = sys.argv[1], sys.argv[2]
    compiler = sys.argv[3:]
    with open(source, encoding="utf-8") as f:
        text = f.read()
    expects = re.findall(r"^// expect: (.+)$", text, re.M)
    firsts = re.findall(r"^// expect-first: (.+)$", text, re.M)
    if not expects and not firsts:
        sys.exit(f"{source}: no '// expect:' line")
    cmd = compiler + ["-std=c++20", "-fsyntax-only", "-I", include, source]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if run.returncode == 0:
        sys.exit(f"{source}: compiled, but it must not")
    for e in expects:
        if e not in run.stderr:
            sys.stderr.write(run.stderr[-4000:])
            sys.exit(f"{source}: rejected, but without the message: {e}")
    first = next((l for l in run.stderr.splitlines() if "error" in l), "")
    for e in firsts:
        if e not in first:
            sys.stderr.write(run.stderr[-4000:])
            sys.exit(f"{source}: the first error is not the cause: {first!r}\n"
                     f"  expected in it: {e}")
    print(f"{source}: rejected with: " + " | ".join(expects + firsts))


if __name__ == "__main__":
    main()
