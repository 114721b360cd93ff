#!/usr/bin/env python3
"""Finds module cycles in Herald's crates: module A imports module B, and B
(directly or through others) imports A back.

An import is any `crate::`, `super::` or `self::` path in code (comments
stripped), resolved to the deepest module it names; a file's references
to itself and `mod` declarations do not count. `--docs` also counts
intra-doc links (`[`crate::x`]`) as imports.

Usage: scripts/module-cycles.py [--docs] [crates/<name> ...]
(default: every crate). Prints each cycle; exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+|::\{)")
DOC_LINK = re.compile(r"\[`?(crate(?:::\w+)+)")


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts.pop()
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//.*", "", text)


def brace_group(text: str, start: int) -> list:
    """The top-level paths of a `{a, b::c, d::{e}}` group at `start`."""
    depth, item, items = 0, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                items.append(item)
                break
        elif ch == "," and depth == 1:
            items.append(item)
            item = ""
            continue
        item += ch
    return [re.sub(r"\s+", "", i).split("::{")[0] for i in items if i.strip()]


def inline_modules(text: str) -> list:
    """The (start, end) spans of inline `mod name { ... }` blocks."""
    spans = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth = 0
        for i in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                spans.append((m.start(), i))
                break
    return spans


def references(text: str) -> list:
    """Every path after `crate`, `super` or `self`, as (segments, the
    number of inline modules it sits in)."""
    spans = inline_modules(text)
    found = []
    for m in PATH.finditer(text):
        head, rest = m.group(1), m.group(2)
        inline = sum(1 for a, b in spans if a < m.start() < b)
        if rest == "::{":
            for item in brace_group(text, m.end() - 1):
                found.append(([head] + item.split("::"), inline))
        else:
            found.append(([head] + rest.strip(":").split("::"), inline))
    return found


def resolve(module: tuple, segments: list, inline: int, modules: set):
    head, rest = segments[0], segments[1:]
    if head == "crate":
        base = ()
    else:
        # `self` and `super` inside inline modules (`mod tests`) stay in
        # the file until they climb out of them.
        ups = 0 if head == "self" else 1
        while rest and rest[0] == "super":
            ups, rest = ups + 1, rest[1:]
        base = module[: len(module) - max(0, ups - inline)] if ups > inline else module
    target = base
    for seg in rest:
        if target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def graph(crate: Path, docs: bool) -> dict:
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    edges = {m: set() for m in modules}
    for module, file in files.items():
        raw = file.read_text()
        text = strip_comments(raw)
        text = re.sub(r"\bmod\s+\w+\s*;", "", text)
        paths = references(text)
        if docs:
            paths += [(p.split("::"), 0) for p in DOC_LINK.findall(raw)]
        for segments, inline in paths:
            edges[module].add(resolve(module, segments, inline, modules))
    for module in edges:
        edges[module].discard(module)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(module: tuple) -> str:
    return "::".join(module) or "crate"


def main() -> int:
    args = sys.argv[1:]
    docs = "--docs" in args
    crates = [ROOT / a for a in args if a != "--docs"] or sorted(
        p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir()
    )
    found = 0
    for crate in crates:
        edges = graph(crate, docs)
        for component in cycles(edges):
            found += 1
            inside = set(component)
            links = [
                f"{name(a)} -> {name(b)}"
                for a in component
                for b in sorted(edges[a])
                if b in inside
            ]
            print(f"{crate.name}: cycle among {', '.join(map(name, component))}")
            for link in links:
                print(f"    {link}")
    if not found:
        print("no module cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
