"""The mutation engine the catalogue's test uses: sites found by shape, whatever the names."""

from __future__ import annotations

import textwrap

import pytest
from ast_mutation import Mutation, mutant

SOURCE = """
import functools


def helper(a, b):
    return a + b


def kernel(x, y):
    total = helper(x,
                   y)  # a comment, odd formatting
    return total * 2


def twice(u, v):
    return u + v, u + u


@functools.lru_cache
def cached(n):
    return n + 1


alias = kernel
"""


@pytest.fixture
def sample(tmp_path, monkeypatch):
    (tmp_path / "mutation_sample.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mutation_sample

    yield mutation_sample
    import sys

    sys.modules.pop("mutation_sample", None)


def apply(monkeypatch, mutation):
    function, code, where = mutant(mutation)
    monkeypatch.setattr(function, "__code__", code)
    return where


def test_names_match_any_names_and_the_replacement_takes_them(sample, monkeypatch):
    where = apply(monkeypatch, Mutation("mutation_sample", "t = h(p, q)", "t = h(p, 2 * q)", ""))
    assert where == "mutation_sample.kernel"
    assert sample.kernel(1, 10) == 42
    assert sample.alias(1, 10) == 42  # the function object itself runs the mutant


def test_a_match_must_be_unique_and_present(sample):
    with pytest.raises(LookupError, match="matches 2 times"):
        mutant(Mutation("mutation_sample", "a + b", "a - b", ""))
    with pytest.raises(LookupError, match="matches 0 times"):
        mutant(Mutation("mutation_sample", "a * b * c", "a", ""))


def test_distinct_names_match_distinct_names(sample, monkeypatch):
    apply(monkeypatch, Mutation("mutation_sample", "x + x", "x - x", "", inside="twice"))
    assert sample.twice(2, 5) == (7, 0)


def test_inside_narrows_the_scope_and_decorated_functions_are_reached(sample, monkeypatch):
    apply(monkeypatch, Mutation("mutation_sample", "n + 1", "n + 2", "", inside="cached"))
    assert sample.cached.__wrapped__(1) == 3


def test_the_original_comes_back(sample, monkeypatch):
    with monkeypatch.context() as patch:
        apply(patch, Mutation("mutation_sample", "return total * 2", "return total * 3", ""))
        assert sample.kernel(1, 1) == 6
    assert sample.kernel(1, 1) == 4
