"""LRA ListOps, generated offline and deterministically (numpy only; nothing is downloaded or cached).

Follows the generator of Tay et al. 2020 (Long Range Arena, ``lra_benchmarks/data/listops.py``):

* a node at depth ``d`` (the root has depth 1) is a leaf, a digit 0..9, with probability 0.75
  (``random() > 0.25``) unless ``d == max_depth``, where it is always a leaf; otherwise it is an
  operator with 2..``max_args`` arguments (uniform), generated depth first, and its operator is drawn
  after its arguments, uniform over MIN, MAX, MED (``int(median)``) and SM (sum mod 10);
* the length is the number of tokens without parentheses (an operator counts 2: itself and ``]``);
  a tree is kept only when ``min_length < length < max_length`` (strict, LRA: 500 and 2000);
* sequences are de-duplicated, and the splits are consecutive slices in order of first appearance:
  train, then val, then test (LRA: 96,000 / 2,000 / 2,000).

Differences from the original, all deliberate: the original uses the unseeded global ``random`` and
splits by Python ``set`` order; here a private ``numpy.random.default_rng(seed)`` drives everything and
order is insertion order, so ``generate(n)`` is a prefix of ``generate(m)`` for ``m > n`` and the same
arguments always give the same arrays. Trees are abandoned as soon as they can no longer be shorter than
``max_length`` (they would be rejected anyway, so the accepted distribution is unchanged). Integers are
drawn as ``floor(u * k)`` from uniform doubles ``u``.

Tokens follow the S4-style pipelines (parentheses dropped): see ``VOCAB``; sequences are right-padded
with ``PAD_ID`` to ``seq_len``.
"""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------- vocabulary
VOCAB: tuple[str, ...] = ("<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
                          "[MIN", "[MAX", "[MED", "[SM", "]")
PAD_ID = 0
TOKEN_TO_ID: dict[str, int] = {tok: i for i, tok in enumerate(VOCAB)}
DIGIT_IDS: tuple[int, ...] = tuple(TOKEN_TO_ID[str(v)] for v in range(10))   # id of digit v
OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
OPERATOR_IDS: tuple[int, ...] = tuple(TOKEN_TO_ID[op] for op in OPERATORS)
END_ID = TOKEN_TO_ID["]"]
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10

VALUE_P = 0.25                    # probability that a node above max_depth is an operator
SPLITS = ("train", "val", "test")

# LRA defaults (Tay et al. 2020)
LRA_DEFAULTS = dict(max_depth=10, max_args=10, min_length=500, max_length=2000)
LRA_SPLIT_SIZES = dict(n_train=96_000, n_val=2_000, n_test=2_000)

# A size a 2-core CPU trains a small model on in minutes. Passed as ``load_listops(split, **LISTOPS_SMALL)``.
LISTOPS_SMALL: dict = dict(n_train=5000, n_val=0, n_test=1000, seq_len=128, seed=0,
                           max_depth=5, max_args=5, min_length=16, max_length=129)
SMALL_SEQ_LENS = (32, 2048)       # listops_small's lengths: below 32 few trees fit (slow to draw 6,000 distinct)


def listops_small(seq_len: int | None = None) -> dict:
    """``LISTOPS_SMALL`` for sequences of ``seq_len`` tokens (default 128, the preset itself): trees
    shorter than ``seq_len + 1`` tokens, right-padded to ``seq_len`` (e.g. 64 for the authors'
    ListOps-layout checkpoints, which store L = 64)."""
    if seq_len is None:
        return dict(LISTOPS_SMALL)
    lo, hi = SMALL_SEQ_LENS
    if not lo <= seq_len <= hi:
        raise ValueError(f"listops: seq_len must be {lo}..{hi}, got {seq_len}")
    return {**LISTOPS_SMALL, "seq_len": int(seq_len), "max_length": int(seq_len) + 1}


# ---------------------------------------------------------------------------------- tokens
def encode(tree_string: str) -> list[int]:
    """Token ids of a ListOps expression, e.g. ``'[MAX 2 9 [MIN 4 7 ] 0 ]'``.

    Tokens are separated by whitespace; the parentheses of the LRA TSV form (``'( ( [MAX 2 ) 9 ) ] )'``)
    are dropped, as in the S4-style pipelines. No padding is added."""
    ids = []
    for tok in tree_string.split():
        if tok in ("(", ")"):
            continue
        try:
            ids.append(TOKEN_TO_ID[tok])
        except KeyError:
            raise ValueError(f"listops: unknown token {tok!r} (vocabulary: {' '.join(VOCAB[1:])})") from None
        if ids[-1] == PAD_ID:
            raise ValueError("listops: the padding token cannot appear in an expression")
    return ids


def decode(ids, parens: bool = False) -> str:
    """The expression of a sequence of token ids; ``PAD_ID`` entries (the padding) are skipped.

    ``parens=True`` rebuilds the LRA TSV form, where every operator application is left-nested:
    ``[MAX 2 9 ]`` becomes ``( ( ( [MAX 2 ) 9 ) ] )``."""
    toks = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == PAD_ID:
            continue
        if not 0 < i < VOCAB_SIZE:
            raise ValueError(f"listops: token id {i} out of range 0..{VOCAB_SIZE - 1}")
        toks.append(VOCAB[i])
    return " ".join(_lra_parens(toks)) if parens else " ".join(toks)


def _lra_parens(toks: list[str]) -> list[str]:
    """LRA ``to_string``: op args a0..ak -> ``( ( ... ( ( op a0 ) a1 ) ... ak ) ] )``."""
    pos = 0

    def node() -> list[str]:
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok not in OPERATORS:
            if tok == "]":
                raise ValueError("listops: unexpected ']'")
            return [tok]
        args = []
        while pos < len(toks) and toks[pos] != "]":
            args.append(node())
        if pos >= len(toks):
            raise ValueError("listops: missing ']'")
        pos += 1
        if not args:
            raise ValueError(f"listops: {tok} has no arguments")
        # ((op a0) a1) ... then (t ])
        s = ["(", tok] + args[0] + [")"]
        for a in args[1:]:
            s = ["("] + s + a + [")"]
        return ["("] + s + ["]", ")"]

    if not toks:
        return []
    out = node()
    if pos != len(toks):
        raise ValueError("listops: trailing tokens after the expression")
    return out


# ---------------------------------------------------------------------------------- generator
def _max_tree_length(max_depth: int, max_args: int) -> int:
    length = 1                                   # a node at max_depth is a leaf
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _check(max_depth, max_args, min_length, max_length):
    if max_depth < 1 or max_args < 2:
        raise ValueError(f"listops: need max_depth >= 1 and max_args >= 2, got {max_depth}, {max_args}")
    if max_length - min_length < 2:
        raise ValueError(f"listops: no length lies strictly between min_length={min_length} and max_length={max_length}")
    longest = _max_tree_length(max_depth, max_args)
    if longest <= min_length:
        raise ValueError(f"listops: trees with max_depth={max_depth}, max_args={max_args} have at most {longest} "
                         f"tokens, none longer than min_length={min_length}")


def _one_tree(nxt, max_depth, max_args, max_length, tokens):
    """Generate one tree into ``tokens`` (cleared first); return its label, or -1 when it reached max_length.

    ``nxt()`` returns the next uniform double in [0, 1). Draw order per node as in LRA: r, then
    (leaf) the value or (operator) the argument count, the arguments, and last the operator."""
    tokens.clear()
    stack = []                       # [position of the operator token, argument count, argument values]
    depth = 1
    limit = max_length
    digit_ids, op_ids, end_id = DIGIT_IDS, OPERATOR_IDS, END_ID
    n_args = max_args - 1
    while True:
        if depth < max_depth and nxt() <= VALUE_P:          # operator node: descend
            stack.append([len(tokens), 2 + int(nxt() * n_args), []])
            tokens.append(0)
            depth += 1
            if len(tokens) + len(stack) >= limit:           # final length >= tokens so far + pending ']'
                return -1
            continue
        value = int(nxt() * 10)                               # leaf
        tokens.append(digit_ids[value])
        while stack:                                          # hand the value up through completed operators
            frame = stack[-1]
            vals = frame[2]
            vals.append(value)
            if len(vals) < frame[1]:
                break
            op = int(nxt() * 4)
            tokens[frame[0]] = op_ids[op]
            tokens.append(end_id)
            if op == 0:
                value = min(vals)
            elif op == 1:
                value = max(vals)
            elif op == 2:
                s = sorted(vals)
                m = len(s) // 2
                value = s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2     # int(np.median): values >= 0
            else:
                value = sum(vals) % 10
            stack.pop()
            depth -= 1
        else:
            return value
        if len(tokens) + len(stack) >= limit:
            return -1


def _generate_bytes(n, seed, max_depth, max_args, min_length, max_length):
    """The first ``n`` distinct accepted sequences as (bytes of token ids, label), in insertion order."""
    _check(max_depth, max_args, min_length, max_length)
    rng = np.random.default_rng(seed)
    block = 1 << 15
    buf: list[float] = []
    pos = len(buf)

    def nxt() -> float:
        nonlocal buf, pos
        if pos >= len(buf):
            buf = rng.random(block).tolist()
            pos = 0
        pos += 1
        return buf[pos - 1]

    seen: dict[bytes, int] = {}
    tokens: list[int] = []
    since_new = 0
    stall = 5_000_000                         # trees in a row without a new sample before giving up
    while len(seen) < n:
        label = _one_tree(nxt, max_depth, max_args, max_length, tokens)
        since_new += 1
        if label >= 0 and min_length < len(tokens) < max_length:
            key = bytes(tokens)
            if key not in seen:
                seen[key] = label
                since_new = 0
                continue
        if since_new >= stall:
            raise RuntimeError(f"listops: no new sequence in {stall} trees after {len(seen)} samples "
                               f"(too few distinct trees with these limits?)")
    return list(seen.items())


def generate(n: int, seed: int = 0, max_depth: int = 10, max_args: int = 10,
             min_length: int = 500, max_length: int = 2000) -> list[tuple[list[int], int]]:
    """The first ``n`` distinct ListOps samples for ``seed``: a list of (token ids, label 0..9), unpadded."""
    if n < 0:
        raise ValueError(f"listops: n must be >= 0, got {n}")
    return [(list(key), label) for key, label in
            _generate_bytes(int(n), seed, max_depth, max_args, min_length, max_length)]


def load_listops(split: str = "train", *, n_train: int = 96_000, n_val: int = 2_000, n_test: int = 2_000,
                 seq_len: int | None = None, seed: int = 0, max_depth: int = 10, max_args: int = 10,
                 min_length: int = 500, max_length: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """One split as ``(x, y)``: x uint8 (n, seq_len) token ids right-padded with ``PAD_ID``, y int64 (n,).

    The splits are consecutive slices of one generated stream (train, val, test), so loading ``test``
    generates train and val first. ``seq_len`` defaults to ``max_length`` and must hold the longest
    possible sequence (``max_length - 1``). The label is the value 0..9 (not a token id). For
    ``datasets.Dataset`` (shape (n, L, d_in), levels): ``x[..., None]`` with ``levels = VOCAB_SIZE - 1``."""
    if split not in SPLITS:
        raise ValueError(f"listops: unknown split {split!r} (choose {', '.join(SPLITS)})")
    seq_len = max_length if seq_len is None else int(seq_len)
    if seq_len < max_length - 1:
        raise ValueError(f"listops: seq_len={seq_len} cannot hold sequences up to {max_length - 1} tokens "
                         f"(use seq_len >= max_length - 1)")
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if min(sizes.values()) < 0:
        raise ValueError(f"listops: split sizes must be >= 0, got {sizes}")
    start = {"train": 0, "val": n_train, "test": n_train + n_val}[split]
    stop = start + sizes[split]
    samples = _generate_bytes(stop, seed, max_depth, max_args, min_length, max_length)[start:stop]
    x = np.full((len(samples), seq_len), PAD_ID, dtype=np.uint8)
    y = np.empty(len(samples), dtype=np.int64)
    for i, (key, label) in enumerate(samples):
        x[i, :len(key)] = np.frombuffer(key, dtype=np.uint8)
        y[i] = label
    return x, y
