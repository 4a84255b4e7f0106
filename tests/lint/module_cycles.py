#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a circle.

For each crate under crates/ (and bench/), every `crate::NAME` mentioned in
`src/NAME.rs` or `src/NAME/**.rs` is an edge NAME -> OTHER between top-level
modules (`lib.rs`/`main.rs` is the root and may use anything). Doc comments are
ignored. A cycle is printed with the files that make it.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MENTION = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}` names several modules at once.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def modules_of(src: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Top-level module name -> its files."""
    modules: dict[str, list[pathlib.Path]] = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.parts == ("lib.rs",) or rel.parts == ("main.rs",):
            continue
        name = rel.parts[0].removesuffix(".rs")
        modules.setdefault(name, []).append(path)
    return modules


def code_without_comments(text: str) -> str:
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        lines.append(line)
    return "\n".join(lines)


def edges(modules: dict[str, list[pathlib.Path]]) -> dict[str, dict[str, pathlib.Path]]:
    graph: dict[str, dict[str, pathlib.Path]] = {m: {} for m in modules}
    for name, files in modules.items():
        for path in files:
            text = code_without_comments(path.read_text(encoding="utf-8"))
            # `#[cfg(test)] mod tests` may use anything of its parent's siblings.
            text = re.split(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod tests", text, maxsplit=1)[0]
            targets = set(MENTION.findall(text))
            for group in GROUP.findall(text):
                for item in group.split(","):
                    head = item.strip().split("::")[0].strip()
                    if re.fullmatch(r"[a-z_][a-z0-9_]*", head):
                        targets.add(head)
            for target in targets:
                if target != name and target in modules:
                    graph[name].setdefault(target, path)
    return graph


def find_cycle(graph: dict[str, dict[str, pathlib.Path]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def main() -> int:
    crates = sorted((ROOT / "crates").glob("*/src")) + [ROOT / "bench" / "src"]
    failed = False
    for src in crates:
        graph = edges(modules_of(src))
        cycle = find_cycle(graph)
        if cycle:
            failed = True
            crate = src.parent.name
            print(f"{crate}: modules import each other in a circle: {' -> '.join(cycle)}")
            for a, b in zip(cycle, cycle[1:]):
                print(f"  {a} -> {b} in {graph[a][b].relative_to(ROOT)}")
    if failed:
        print("Break the circle: move what both need into a module of its own.")
        return 1
    print(f"no import circles in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
