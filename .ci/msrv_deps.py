"""Reads `cargo metadata` JSON on stdin and fails when a package the
library can build with declares a rust-version newer than the library's
(argv[1]). Dependencies that declare none are listed, not failed."""

import json
import sys


def version(text):
    return tuple(int(part) for part in text.split("."))


def main():
    msrv = version(sys.argv[1])
    meta = json.load(sys.stdin)
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "latchfree" and p["source"] is None)
    # Everything the library reaches through normal dependencies, with
    # every feature on (the resolve is the workspace's, which has them all).
    seen, stack = set(), [root]
    while stack:
        node = nodes[stack.pop()]
        for dep in node["deps"]:
            if any(kind["kind"] is None for kind in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    newer, undeclared = [], []
    for pid in sorted(seen, key=lambda i: packages[i]["name"]):
        pkg = packages[pid]
        declared = pkg.get("rust_version")
        if declared is None:
            undeclared.append(f'{pkg["name"]} {pkg["version"]}')
        elif version(declared) > msrv:
            newer.append(f'{pkg["name"]} {pkg["version"]} needs {declared}')
    print(f"{len(seen)} dependencies checked against rust-version {sys.argv[1]}")
    if undeclared:
        print("declare no rust-version: " + ", ".join(undeclared))
    if newer:
        print("newer than the library's rust-version:\n  " + "\n  ".join(newer), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
