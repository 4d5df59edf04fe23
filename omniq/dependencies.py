"""Pure dependency rules: cycles inside one enqueue_many batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in ``edges`` (task id -> ids it depends on) as a path, or None.

    Only ids that are keys of ``edges`` are followed; others exist already and cannot close a
    cycle. Iterative so a long chain cannot exhaust the recursion limit.
    """
    done: set[str] = set()
    for root in edges:
        if root in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                path.append(node)
                on_path.add(node)
            deps = [d for d in edges.get(node, ()) if d in edges]
            if index < len(deps):
                stack.append((node, index + 1))
                nxt = deps[index]
                if nxt in on_path:
                    return [*path[path.index(nxt):], nxt]
                if nxt not in done:
                    stack.append((nxt, 0))
                continue
            path.pop()
            on_path.discard(node)
            done.add(node)
    return None
