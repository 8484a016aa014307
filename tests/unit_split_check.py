#!/usr/bin/env python3
"""Checks that meson's per-file unit tests together run every doctest test
case exactly once: the test cases listed through the per-file filters (-sf)
are, as a multiset, the whole binary's list.

Usage: unit_split_check.py <kcont_tests> <filter>...
(--no-skip lists the cases a skip decorator leaves out of this build too.)
"""
import collections
import subprocess
import sys


def names(binary, *args):
    out = subprocess.run([binary, '-ltc', '--no-skip', '--no-colors', *args],
                         check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    rules = [i for i, l in enumerate(lines) if l.startswith('=====')]
    if len(rules) < 2:
        sys.exit('unexpected doctest -ltc output:\n' + out)
    return collections.Counter(lines[rules[0] + 1:rules[1]])


def main():
    binary, filters = sys.argv[1], sys.argv[2:]
    whole = names(binary)
    union = collections.Counter()
    for f in filters:
        part = names(binary, '-sf=' + f)
        if not part:
            print(f'{f}: selects no test case')
            return 1
        union += part
    missing = whole - union
    twice = union - whole
    for n in sorted(missing):
        print(f'in no per-file test: {n}')
    for n in sorted(twice):
        print(f'in more than one per-file test: {n}')
    print(f'{sum(whole.values())} test cases, {len(filters)} files, '
          f'{sum(union.values())} selected')
    return 1 if missing or twice else 0


if __name__ == '__main__':
    sys.exit(main())
