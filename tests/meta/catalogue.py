"""What the mutation tests share: run a part of ``funcnet check``'s catalogue, and put a
mutant (``ast_mutation``) in place of the function that holds its site."""

from __future__ import annotations

import jax
from ast_mutation import Mutation, mutant

from funcnet.cli import check


def failures(match: str, arrays: str, kinds: set[str] | None = None) -> list[str]:
    """The labels of the failing cases among those whose label contains ``match``, run on
    the array types ``arrays`` (``"numpy jax"``) and, if given, of the kinds ``kinds``."""
    reports = check.builtin_checks(match=match, arrays=set(arrays.split()), kinds=kinds)
    assert reports, f"no case's label contains {match!r}"
    return [r.name for r in reports if not r.ok]


def apply(monkeypatch, mutation: Mutation) -> str:
    """Run ``mutation``'s mutant in place of the function holding its site (until the test
    ends); returns that function's dotted name."""
    function, code, where = mutant(mutation)
    monkeypatch.setattr(function, "__code__", code)
    # Jitted kernels that call the original were traced already: trace them afresh.
    jax.clear_caches()
    return where
