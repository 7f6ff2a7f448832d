"""LRA ListOps generator: determinism, labels (checked by an independent evaluator), bounds, padding, vocabulary."""
import numpy as np
import pytest

from neurocompile import listops
from neurocompile.listops import (LISTOPS_SMALL, PAD_ID, VOCAB, decode, encode, generate, load_listops)

# Small and fast: a few hundred short trees.
TINY = dict(max_depth=5, max_args=5, min_length=16, max_length=129)


# ------------------------------------------------------------------ independent evaluator (over token ids)
def _evaluate(ids):
    """Parse prefix token ids (no padding) by recursive descent and evaluate; returns (value, depth)."""
    ops = {VOCAB.index("[MIN"): min, VOCAB.index("[MAX"): max,
           VOCAB.index("[MED"): lambda a: int(np.median(a)), VOCAB.index("[SM"): lambda a: int(np.sum(a)) % 10}
    end = VOCAB.index("]")
    pos = 0

    def node(depth):
        nonlocal pos
        tok = ids[pos]
        pos += 1
        if tok in ops:
            args, d = [], depth
            while ids[pos] != end:
                v, sub = node(depth + 1)
                args.append(v)
                d = max(d, sub)
            pos += 1
            assert 2 <= len(args), "an operator has at least two arguments"
            return ops[tok](args), d
        digit = VOCAB[tok]
        assert digit.isdigit() and len(digit) == 1, f"unexpected token {digit!r}"
        return int(digit), depth

    value, depth = node(1)
    assert pos == len(ids), "trailing tokens"
    return value, depth


def _unpad(row):
    row = list(row)
    n = len(row)
    while n and row[n - 1] == PAD_ID:
        n -= 1
    return row[:n]


# ------------------------------------------------------------------ tests
def test_vocabulary_and_round_trip():
    assert VOCAB[PAD_ID] == "<pad>" and PAD_ID == 0 and len(VOCAB) == 16 and len(set(VOCAB)) == 16
    s = "[MAX 2 9 [MIN 4 7 ] 0 ]"
    ids = encode(s)
    assert decode(ids) == s and encode(decode(ids)) == ids
    assert decode(ids + [PAD_ID] * 5) == s                              # padding is skipped
    # the LRA TSV form (parentheses) encodes to the same ids, and decode(parens=True) rebuilds it
    lra = "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"   # as LRA's to_string writes it
    assert encode(lra) == ids and decode(ids, parens=True) == lra
    assert decode(encode("[SM 3 4 ]"), parens=True) == "( ( ( [SM 3 ) 4 ) ] )"
    with pytest.raises(ValueError, match="unknown token"):
        encode("[FIRST 1 2 ]")
    for ids, _ in generate(20, seed=3, **TINY):
        assert encode(decode(ids)) == ids and encode(decode(ids, parens=True)) == ids


def test_determinism():
    a = load_listops("train", n_train=200, n_test=50, n_val=0, seq_len=128, seed=0, **TINY)
    b = load_listops("train", n_train=200, n_test=50, n_val=0, seq_len=128, seed=0, **TINY)
    c = load_listops("train", n_train=200, n_test=50, n_val=0, seq_len=128, seed=1, **TINY)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # generate(n) is a prefix of generate(m > n): the train split does not depend on the other sizes
    assert generate(30, seed=0, **TINY) == generate(60, seed=0, **TINY)[:30]
    d = load_listops("train", n_train=200, n_test=999, n_val=7, seq_len=128, seed=0, **TINY)
    assert np.array_equal(a[0], d[0])


def test_shapes_labels_bounds_padding_and_no_duplicates():
    kw = dict(n_train=300, n_val=40, n_test=60, seq_len=140, seed=5, **TINY)
    splits = {s: load_listops(s, **kw) for s in ("train", "val", "test")}
    rows = set()
    for split, (x, y) in splits.items():
        n = kw[f"n_{split}"]
        assert x.shape == (n, 140) and y.shape == (n,) and y.dtype == np.int64
        assert np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() < len(VOCAB)
        for row, label in zip(x, y):
            ids = _unpad(row)
            assert TINY["min_length"] < len(ids) < TINY["max_length"]
            assert (row[len(ids):] == PAD_ID).all() and PAD_ID not in ids        # right padding only
            value, depth = _evaluate(ids)
            assert value == label and 0 <= label <= 9
            assert depth <= TINY["max_depth"]          # root at depth 1; only leaves at depth max_depth
            rows.add(tuple(ids))
    assert len(rows) == 400                             # no duplicates, within or across splits
    # the splits are consecutive slices of one stream, in insertion order
    stream = generate(400, seed=5, **TINY)
    assert [list(ids) for ids, _ in stream[340:]] == [_unpad(r) for r in splits["test"][0]]


def test_labels_of_generate_and_all_classes_present():
    samples = generate(500, seed=2, **TINY)
    for ids, label in samples:
        assert _evaluate(ids)[0] == label
    assert set(label for _, label in samples) == set(range(10))
    assert len({tuple(ids) for ids, _ in samples}) == len(samples)


def test_small_preset():
    x, y = load_listops("test", **LISTOPS_SMALL)
    assert x.shape == (LISTOPS_SMALL["n_test"], LISTOPS_SMALL["seq_len"])
    counts = np.bincount(y, minlength=10)
    assert counts.max() < 0.2 * len(y) and counts.min() > 0.05 * len(y)      # not dominated by one class


def test_lra_defaults_lengths():
    samples = generate(3, seed=0)
    for ids, label in samples:
        assert 500 < len(ids) < 2000
        assert _evaluate(ids)[0] == label
    x, y = load_listops("train", n_train=2, n_val=0, n_test=0)
    assert x.shape == (2, 2000) and x[0, 1999] == PAD_ID


def test_argument_errors():
    with pytest.raises(ValueError, match="seq_len"):
        load_listops("train", n_train=2, seq_len=100, **TINY)
    with pytest.raises(ValueError, match="unknown split"):
        load_listops("dev", n_train=2, **TINY)
    with pytest.raises(ValueError, match="at most"):
        generate(1, max_depth=2, max_args=3, min_length=10, max_length=20)
    with pytest.raises(ValueError, match="strictly between"):
        generate(1, min_length=10, max_length=11)
    assert listops._max_tree_length(3, 2) == 2 + 2 * (2 + 2 * 1)


def test_generator_follows_lra_draw_order():
    """A recursive transcription of LRA's generate_tree / to_value, fed the same uniform stream, builds the
    same trees and labels as the iterative generator (max_length high enough that nothing is abandoned)."""
    rng = np.random.default_rng(11)
    stream = iter(rng.random(200_000).tolist())
    nxt = stream.__next__
    ops = ["[MIN", "[MAX", "[MED", "[SM"]

    def lra_tree(depth, max_depth, max_args):            # returns (tokens, value)
        r = nxt() if depth < max_depth else 1
        if r > 0.25:
            v = int(nxt() * 10)
            return [str(v)], v
        num_values = 2 + int(nxt() * (max_args - 1))
        toks, vals = [], []
        for _ in range(num_values):
            t, v = lra_tree(depth + 1, max_depth, max_args)
            toks += t
            vals.append(v)
        op = ops[int(nxt() * 4)]
        value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)),
                 "[SM": lambda a: int(np.sum(a)) % 10}[op](vals)
        return [op] + toks + ["]"], value

    rng2 = np.random.default_rng(11)
    stream2 = iter(rng2.random(200_000).tolist())
    tokens = []
    for _ in range(300):
        want_toks, want_value = lra_tree(1, 6, 6)
        got = listops._one_tree(stream2.__next__, 6, 6, 10**9, tokens)
        assert got == want_value and decode(tokens) == " ".join(want_toks)
