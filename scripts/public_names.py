#!/usr/bin/env python3
"""Counts the public names of kcont: the distinct names declared directly in
namespace kcont (and in its public nested namespaces, such as kcont::ev),
outside kcont::detail, as clang sees them in a translation unit that includes
every public header. Usage: scripts/public_names.py [--list] [ROOT]
Needs clang++ (any version that has -ast-dump=json)."""
import json
import pathlib
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a != "--list"]
    root = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent)
    base = root / "include" / "kcont"
    headers = sorted(h.relative_to(base).as_posix() for h in base.rglob("*.hpp")
                     if "detail" not in h.relative_to(base).parts)
    src = "".join(f"#include <kcont/{h}>\n" for h in headers)
    out = subprocess.run(["clang++", "-std=c++20", "-fsyntax-only", "-I", str(root / "include"),
                          "-Xclang", "-ast-dump=json", "-Xclang", "-ast-dump-filter=kcont",
                          "-x", "c++", "-"], input=src, capture_output=True, text=True, check=True)
    # -ast-dump-filter prints one JSON object per matching top-level decl.
    dec = json.JSONDecoder()
    text, pos, names = out.stdout, 0, set()

    def walk(ns, prefix):
        for d in ns.get("inner", []):
            if d.get("isImplicit"):
                continue
            kind, name = d.get("kind", ""), d.get("name")
            if not name or kind in ("UsingDirectiveDecl",):
                continue
            if kind == "NamespaceDecl":
                if name == "detail":
                    continue
                names.add(prefix + name)
                walk(d, prefix + name + "::")
            else:
                names.add(prefix + name)

    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        if not text.startswith("{", pos):  # a "Dumping kcont:" line
            pos = text.find("\n", pos) + 1 or len(text)
            continue
        obj, pos = dec.raw_decode(text, pos)
        if obj.get("kind") == "NamespaceDecl" and obj.get("name") == "kcont":
            walk(obj, "")
    if "--list" in sys.argv:
        print("\n".join(sorted(names)))
    print(f"{len(names)} public names in namespace kcont ({len(headers)} public headers)")


if __name__ == "__main__":
    main()
