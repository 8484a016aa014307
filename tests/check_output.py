#!/usr/bin/env python3
"""Runs an example and compares its standard output with the block that the
example's own source gives after the line `// Expected output:` (each line
prefixed `//   `), so the README's copy, the source and the check never drift.
Usage: check_output.py EXE SOURCE [LAUNCHER...]  (e.g. wine64 for a Windows
build: the example runs as LAUNCHER... EXE)."""
import subprocess
import sys


def expected_from(source):
    lines, inside = [], False
    with open(source, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.strip() == "// Expected output:":
                inside = True
                continue
            if inside:
                if line.startswith("//   "):
                    lines.append(line[5:])
                elif line.strip() == "//":
                    lines.append("")
                else:
                    break
    if not inside:
        sys.exit(f"{source}: no '// Expected output:' block")
    return lines


def main():
    exe, source, launcher = sys.argv[1], sys.argv[2], sys.argv[3:]
    want = expected_from(source)
    # text=True reads "\r\n" (a Windows build's) as "\n".
    run = subprocess.run(launcher + [exe], capture_output=True, text=True, timeout=120)
    got = run.stdout.rstrip("\n").split("\n") if run.stdout else []
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        sys.exit(f"{exe} exited with {run.returncode}")
    if got != want:
        sys.stderr.write("expected:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(got) + "\n")
        sys.exit(1)
    print("output matches", source)


if __name__ == "__main__":
    main()
