"""Efficient-attention lab: sparse and low-rank patterns applied to a model's real attention.

Owns (pure numpy):

* boolean masks ``(T_q, T_k)`` for each pattern (full, sliding window, dilated
  window, Longformer, BigBird, block-local, Reformer-style LSH, Synthesizer),
  every one ANDed with the causal mask for decoders and with the model's own mask;
* the attention each pattern would produce, recomputed from the model's real
  pre-softmax ``scores`` (softmax over the allowed positions only), plus the
  Linformer-style random projection and the best rank-k approximation (its bound);
* what each keeps: share of the original attention mass inside the mask, total
  variation and KL between approximated and original rows, and the relative
  error of the head output (weighted sum of the values);
* a layers x heads summary (which heads are local, which look at global tokens);
* an analytic cost model (score entries, FLOPs, memory) for lengths 128 .. 16k.

Conventions.  Positions on the key axis are compared with a query's *centre*:
its own position in self-attention, the proportionally placed key position in
cross attention (decoder and encoder lengths differ).  A query row that a
pattern leaves with nothing to attend to produces no output (a zero row); it is
counted in ``empty_rows`` and scored as fully lost (kept mass 0, TV 1).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from viz.result import CROSS, DECODER, LayerInternals, TokenSeq

# Pattern keys, in the order the page shows them.
FULL, WINDOW, DILATED, LONGFORMER, BIGBIRD, BLOCK, LSH, LINFORMER, LOWRANK, SYNTHESIZER = (
    "full", "window", "dilated", "longformer", "bigbird", "block", "lsh", "linformer", "lowrank",
    "synthesizer")
PATTERNS = (FULL, WINDOW, DILATED, LONGFORMER, BIGBIRD, BLOCK, LSH, LINFORMER, LOWRANK, SYNTHESIZER)
# Patterns that are "softmax of the real scores over a subset of keys": only for
# these is kept mass meaningful (and then TV = 1 - kept mass exactly).
SPARSE_PATTERNS = (FULL, WINDOW, DILATED, LONGFORMER, BIGBIRD, BLOCK, LSH)
# Patterns whose mask does not depend on the head (usable on post-softmax patterns alone).
FIXED_PATTERNS = (FULL, WINDOW, DILATED, LONGFORMER, BIGBIRD, BLOCK)

DEFAULT_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def one_blas_thread():
    """Run BLAS single-threaded (here and in the other analyses that stream small products over a long
    result): these are many small (512 x 512) products, and with the
    cores shared by other sessions OpenBLAS's threads spin-wait each other; measured
    4-5x faster for the all-heads summary on the 2-core server under load."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed-up
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@dataclass(frozen=True)
class PatternConfig:
    """Knobs of every pattern; one object so the page can put them in the URL."""

    window: int = 4               # keys within this many positions on each side of the query
    dilation: int = 2             # dilated window: every dilation-th key, `window` on each side
    block: int = 8                # block-local: queries see their own block of this many keys
    n_random: int = 2             # BigBird: extra random keys per query
    n_buckets: int = 8            # LSH: buckets per hash round (even)
    n_hashes: int = 2             # LSH: hash rounds, a key is visible if it shares a bucket in any
    rank: int = 8                 # Linformer k / low-rank bound rank
    seed: int = 0                 # every random choice (BigBird keys, rotations, projections)
    global_queries: tuple[int, ...] = (0,)   # query positions that see every key
    global_keys: tuple[int, ...] = (0,)      # key positions every query sees
    lsh_chunk: int = 64           # cost model only: Reformer keeps ~this many tokens per bucket


@dataclass(frozen=True)
class MethodInfo:
    key: str
    title: str
    how: str        # what the pattern does
    assumes: str    # what must be true of attention for it to work
    breaks: str     # where it fails
    short: str = ""  # label for small panels


SHORT_TITLES = {FULL: "Full", WINDOW: "Window", DILATED: "Dilated", LONGFORMER: "Longformer", BIGBIRD: "BigBird",
                BLOCK: "Block", LSH: "LSH", LINFORMER: "Linformer", LOWRANK: "Rank-k bound",
                SYNTHESIZER: "Synthesizer"}


METHODS = (
    MethodInfo(FULL, "Full attention", "Every query scores every key: N² entries.",
               "Nothing: this is the model's own attention.",
               "Cost and memory grow with the square of the length."),
    MethodInfo(WINDOW, "Sliding window", "Each query sees the keys within w positions on each side.",
               "What matters is nearby (local syntax, previous/next token).",
               "Heads that read [CLS]/[SEP], punctuation or a far-away antecedent lose that mass."),
    MethodInfo(DILATED, "Dilated window", "Window with gaps: every d-th key, w on each side, so the "
               "reach grows d times at the same cost.",
               "Useful context is spread out and stacked layers fill the gaps.",
               "The immediate neighbours between the gaps are skipped: previous-token heads break."),
    MethodInfo(LONGFORMER, "Longformer (window + global)", "Sliding window plus a few global tokens "
               "that see and are seen by everything.",
               "Long-range traffic goes through a few known tokens ([CLS], question tokens).",
               "Long-range attention between ordinary tokens (coreference, copying) is cut."),
    MethodInfo(BIGBIRD, "BigBird (window + global + random)", "Longformer plus r random keys per query.",
               "Random shortcuts keep the graph connected so information flows in a few layers.",
               "A single layer's random keys rarely hit the key a head actually wants."),
    MethodInfo(BLOCK, "Block-local", "The sequence is cut into blocks; queries see only their own block.",
               "Chunks are roughly independent.",
               "Tokens at a block edge lose their neighbours on the other side."),
    MethodInfo(LSH, "Reformer LSH buckets", "Queries and keys are hashed with random rotations; a query "
               "sees the keys in its bucket (any of several rounds).",
               "Attention is peaked on keys similar to the query, and similar vectors collide.",
               "Broad or positional heads, and keys with large norm but different direction."),
    MethodInfo(LINFORMER, "Linformer (random projection)", "Keys and values are projected from N rows "
               "to k rows with a fixed random matrix (each row a random weighted average of positions); "
               "the query attends to the k mixtures.",
               "Attention matrices are close to low rank; Linformer learns the projection.",
               "A random (untrained) projection mixes unrelated positions; it does not respect "
               "causality naturally (here the projection only mixes allowed keys)."),
    MethodInfo(LOWRANK, "Best rank-k (bound)", "The closest rank-k matrix to the real attention "
               "(truncated SVD), future positions zeroed for decoders.",
               "This is the floor for any rank-k method, not a method you can run cheaply.",
               "Sharp, diagonal patterns have high rank: small k blurs them."),
    MethodInfo(SYNTHESIZER, "Random Synthesizer", "A fixed random attention matrix that ignores the "
               "input entirely (for contrast).",
               "Token mixing does not need query-key interaction.",
               "It cannot follow the text: compare its error with the data-dependent patterns."),
)
METHODS = tuple(MethodInfo(m.key, m.title, m.how, m.assumes, m.breaks, SHORT_TITLES[m.key]) for m in METHODS)
METHOD_INFO = {m.key: m for m in METHODS}


# ---------------------------------------------------------------- masks

def centres(n_q: int, n_k: int) -> np.ndarray:
    """(n_q,) key position each query is centred on: itself, or proportionally placed in cross attention."""
    if n_q == n_k:
        return np.arange(n_q)
    if n_q == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.arange(n_q) * (n_k - 1) / (n_q - 1)).astype(np.int64)


def causal_mask(n_q: int, n_k: int) -> np.ndarray:
    """(n_q, n_k) True where key_pos <= query_pos (queries aligned with the last keys)."""
    return np.arange(n_k)[None, :] <= np.arange(n_q)[:, None] + (n_k - n_q)


def _offsets(n_q: int, n_k: int) -> np.ndarray:
    """(n_q, n_k) key_pos - centre(query_pos)."""
    return np.arange(n_k)[None, :] - centres(n_q, n_k)[:, None]


def _with_causal(mask: np.ndarray, causal: bool) -> np.ndarray:
    return mask & causal_mask(*mask.shape) if causal else mask


def full_mask(n_q: int, n_k: int, *, causal: bool = False) -> np.ndarray:
    return _with_causal(np.ones((n_q, n_k), dtype=bool), causal)


def window_mask(n_q: int, n_k: int, window: int, *, causal: bool = False) -> np.ndarray:
    """Keys within ``window`` positions of the query's centre (2*window+1 keys, window+1 if causal)."""
    return _with_causal(np.abs(_offsets(n_q, n_k)) <= max(0, window), causal)


def dilated_mask(n_q: int, n_k: int, window: int, dilation: int, *, causal: bool = False) -> np.ndarray:
    """Every ``dilation``-th key, ``window`` of them on each side of the centre (and the centre)."""
    d = max(1, dilation)
    off = _offsets(n_q, n_k)
    return _with_causal((np.abs(off) <= max(0, window) * d) & (off % d == 0), causal)


def _positions(pos, n: int) -> np.ndarray:
    p = np.asarray(sorted(set(int(x) for x in pos)), dtype=np.int64)
    return p[(p >= 0) & (p < n)]


def longformer_mask(n_q: int, n_k: int, window: int, *, global_queries=(), global_keys=(),
                    causal: bool = False) -> np.ndarray:
    """Sliding window, plus global query rows that see every key and global key columns every query sees."""
    mask = np.abs(_offsets(n_q, n_k)) <= max(0, window)
    mask[_positions(global_queries, n_q), :] = True
    mask[:, _positions(global_keys, n_k)] = True
    return _with_causal(mask, causal)


def bigbird_mask(n_q: int, n_k: int, window: int, n_random: int, *, global_queries=(), global_keys=(),
                 seed: int = 0, causal: bool = False) -> np.ndarray:
    """Longformer mask plus ``n_random`` extra keys per query, drawn (seeded) among the keys not yet
    visible and allowed by causality; fewer when fewer remain."""
    mask = longformer_mask(n_q, n_k, window, global_queries=global_queries, global_keys=global_keys,
                           causal=causal)
    if n_random <= 0:
        return mask
    rng = np.random.default_rng(seed)
    reachable = causal_mask(n_q, n_k) if causal else np.ones((n_q, n_k), dtype=bool)
    # One random priority per (query, key); the n_random highest among the free keys win.
    priority = rng.random((n_q, n_k))
    priority[mask | ~reachable] = -1.0
    top = np.argsort(-priority, axis=1)[:, :n_random]
    rows = np.repeat(np.arange(n_q), top.shape[1])
    chosen = top.ravel()
    ok = priority[rows, chosen] >= 0
    out = mask.copy()
    out[rows[ok], chosen[ok]] = True
    return out


def block_mask(n_q: int, n_k: int, block: int, *, causal: bool = False) -> np.ndarray:
    """Queries see the keys of their own block of ``block`` positions."""
    b = max(1, block)
    return _with_causal((centres(n_q, n_k)[:, None] // b) == (np.arange(n_k)[None, :] // b), causal)


def lsh_buckets(x: np.ndarray, *, n_buckets: int, n_hashes: int, seed: int = 0) -> np.ndarray:
    """(n_hashes, T) bucket of each row of ``x`` (T, d): argmax over [xR, -xR] of the unit vectors,
    with R a seeded random rotation per round (Andoni et al. 2015, as in Reformer)."""
    n_buckets = max(2, n_buckets + (n_buckets % 2))
    rng = np.random.default_rng(seed)
    rot = rng.standard_normal((max(1, n_hashes), x.shape[1], n_buckets // 2))
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    proj = np.einsum("td,hdb->htb", unit, rot)
    return np.argmax(np.concatenate([proj, -proj], axis=2), axis=2)


def lsh_mask(query: np.ndarray, key: np.ndarray, *, n_buckets: int, n_hashes: int, seed: int = 0,
             causal: bool = False, include_self: bool = True) -> np.ndarray:
    """Keys sharing a bucket with the query in any hash round.

    Queries and keys of one head are hashed with the same rotations.  Reformer
    ties queries to keys, so a position always shares its own bucket; with the
    model's separate q and k that is not guaranteed, so ``include_self`` adds
    the diagonal (self-attention only) as Reformer effectively has.
    """
    bq = lsh_buckets(query, n_buckets=n_buckets, n_hashes=n_hashes, seed=seed)  # (R, T_q)
    bk = lsh_buckets(key, n_buckets=n_buckets, n_hashes=n_hashes, seed=seed)    # (R, T_k)
    mask = (bq[:, :, None] == bk[:, None, :]).any(axis=0)
    if include_self and query.shape[0] == key.shape[0]:
        mask |= np.eye(query.shape[0], dtype=bool)
    return _with_causal(mask, causal)


def synthesizer_logits(n_q: int, n_k: int, *, seed: int = 0) -> np.ndarray:
    """(n_q, n_k) fixed random logits of a Random Synthesizer (Tay et al. 2020): no input dependence."""
    return np.random.default_rng(seed + 7919).standard_normal((n_q, n_k))


def linformer_projection(rank: int, n_k: int, *, seed: int = 0) -> np.ndarray:
    """(rank, n_k) random projection whose rows are random weighted averages (Dirichlet(1) rows).

    Linformer learns E; an untrained one is random.  Non-negative rows that sum
    to 1 keep the projected keys in the keys' own range and the effective
    attention a distribution, so its errors compare directly with the others'.
    """
    rng = np.random.default_rng(seed + 104729)
    e = rng.exponential(1.0, size=(max(1, rank), n_k))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- recomputing attention

def masked_softmax(scores: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of ``scores`` (..., T_q, T_k) over ``allowed`` keys only, in float64.

    Returns (pattern, empty) where rows with nothing allowed are all zeros and
    ``empty`` (..., T_q) marks them, instead of the NaNs a plain softmax gives.
    """
    s = np.where(allowed, np.asarray(scores, dtype=np.float64), -np.inf)
    empty = ~allowed.any(axis=-1)
    row_max = np.max(s, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(s - row_max)               # exp(-inf) = 0 outside the mask
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0), np.broadcast_to(empty, e.shape[:-1])


def best_rank_k(matrix: np.ndarray, k: int) -> np.ndarray:
    """Best rank-k approximation in Frobenius norm (Eckart-Young): projection on the top-k
    eigenvectors of the smaller Gram matrix.  ARPACK finds just those k for large
    matrices (tens of ms at 512 tokens, where a full SVD takes ~0.5 s)."""
    a = np.asarray(matrix, dtype=np.float64)
    n_q, n_k = a.shape
    if k >= min(n_q, n_k):
        return a.copy()
    left = n_q <= n_k
    gram = a @ a.T if left else a.T @ a
    n = gram.shape[0]
    if n >= 64 and k < n // 4:
        v0 = np.full(n, 1.0 / np.sqrt(n))     # fixed start vector: same answer every run
        _, u = scipy.sparse.linalg.eigsh(gram, k=k, which="LA", v0=v0)
    else:
        _, u = scipy.linalg.eigh(gram, subset_by_index=(n - k, n - 1))
    return u @ (u.T @ a) if left else (a @ u) @ u.T


@dataclass(frozen=True)
class HeadInput:
    """One head of one layer, as the lab needs it."""

    scores: np.ndarray     # (T_q, T_k) pre-softmax
    allowed: np.ndarray    # (T_q, T_k) bool, the model's own mask
    query: np.ndarray      # (T_q, d_head)
    key: np.ndarray        # (T_k, d_head)
    value: np.ndarray      # (T_k, d_head)
    causal: bool
    cross: bool = False

    @classmethod
    def from_internals(cls, internals: LayerInternals, head: int) -> HeadInput:
        return cls(scores=internals.scores[head], allowed=np.asarray(internals.mask, dtype=bool),
                   query=internals.query[head], key=internals.key[head], value=internals.value[head],
                   causal=internals.kind == DECODER, cross=internals.kind == CROSS)


@dataclass(frozen=True)
class Approximation:
    """What one pattern does to one head."""

    name: str
    mask: np.ndarray        # (T_q, T_k) bool: keys each query may use (model mask included)
    pattern: np.ndarray     # (T_q, T_k) the attention it produces (effective P E for Linformer, signed for
                            # the low-rank bound)
    output: np.ndarray      # (T_q, d_head) pattern @ value
    kept_mass: float        # mean share of the original row mass inside the mask (NaN: not a mask method)
    tv: float               # mean total variation 0.5 * sum |original - approx| (L1/2 for signed rows)
    kl: float               # mean KL(approx || original) over non-empty rows (NaN for the low-rank bound)
    output_error: float     # ||O - O_approx||_F / ||O||_F
    density: float          # score entries computed / the model's entries
    empty_rows: int         # queries with nothing to attend to


@dataclass(frozen=True)
class StaticMasks:
    """Masks that depend only on the shape and the config (shared by every head of a layer)."""

    masks: dict = field(default_factory=dict)   # pattern -> (T_q, T_k) bool, model mask applied
    synth_logits: np.ndarray | None = None
    projection: np.ndarray | None = None


def static_masks(allowed: np.ndarray, config: PatternConfig, *, causal: bool) -> StaticMasks:
    """The head-independent masks of ``config`` for a model mask ``allowed`` (T_q, T_k)."""
    n_q, n_k = allowed.shape
    kw = dict(causal=causal)
    gq, gk = config.global_queries, config.global_keys
    masks = {
        FULL: full_mask(n_q, n_k, **kw),
        WINDOW: window_mask(n_q, n_k, config.window, **kw),
        DILATED: dilated_mask(n_q, n_k, config.window, config.dilation, **kw),
        LONGFORMER: longformer_mask(n_q, n_k, config.window, global_queries=gq, global_keys=gk, **kw),
        BIGBIRD: bigbird_mask(n_q, n_k, config.window, config.n_random, global_queries=gq,
                              global_keys=gk, seed=config.seed, **kw),
        BLOCK: block_mask(n_q, n_k, config.block, **kw),
    }
    masks = {k: m & allowed for k, m in masks.items()}
    return StaticMasks(masks=masks, synth_logits=synthesizer_logits(n_q, n_k, seed=config.seed),
                       projection=linformer_projection(config.rank, n_k, seed=config.seed))


def _metrics(name: str, original: np.ndarray, out_ref: np.ndarray, approx: np.ndarray, value: np.ndarray,
             allowed: np.ndarray, mask: np.ndarray, *, sparse: bool, empty: np.ndarray,
             entries: float, distribution: bool = True) -> Approximation:
    valid = allowed.any(axis=1)                    # queries the model itself lets attend
    n_valid = max(1, int(valid.sum()))
    tv_rows = 0.5 * np.abs(original - approx).sum(axis=1)
    empty = empty & valid
    tv_rows = np.where(empty, 1.0, tv_rows)        # nothing produced: count the row as fully lost
    kept = float((original * mask).sum(axis=1)[valid].mean()) if sparse and valid.any() else float("nan")
    ok = valid & ~empty
    if distribution and ok.any():
        # KL(approx || original) over the entries approx uses (0 log 0 = 0); only those need a log.
        rows, cols = np.nonzero(approx * ok[:, None] > 0)
        a, o = approx[rows, cols], np.maximum(original[rows, cols], 1e-300)
        kl = float(np.bincount(rows, a * (np.log(a) - np.log(o)), minlength=len(ok))[ok].mean())
    else:
        kl = float("nan")                          # rows that are not distributions (low-rank bound)
    out = approx @ value
    ref_norm = np.linalg.norm(out_ref)
    err = float(np.linalg.norm(out_ref - out) / ref_norm) if ref_norm > 0 else float("nan")
    return Approximation(name=name, mask=mask, pattern=approx, output=out, kept_mass=kept,
                         tv=float(tv_rows[valid].sum() / n_valid), kl=kl, output_error=err,
                         density=float(entries / max(1, allowed.sum())), empty_rows=int(empty.sum()))


def _pattern_mask(name: str, head: HeadInput, config: PatternConfig, static: StaticMasks,
                  allowed: np.ndarray) -> np.ndarray:
    """The (T_q, T_k) mask of a sparse pattern for this head (LSH hashes the head's own q and k)."""
    if name == LSH:
        return lsh_mask(np.asarray(head.query, dtype=np.float64), np.asarray(head.key, dtype=np.float64),
                        n_buckets=config.n_buckets, n_hashes=config.n_hashes, seed=config.seed,
                        causal=head.causal, include_self=not head.cross) & allowed
    return static.masks[name]


def _reference(head: HeadInput) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(allowed, original pattern, value, original output) in float64."""
    allowed = np.asarray(head.allowed, dtype=bool)
    original, _ = masked_softmax(head.scores, allowed)            # (T_q, T_k)
    value = np.asarray(head.value, dtype=np.float64)
    return allowed, original, value, original @ value             # output (T_q, d_head)


def approximate_head(head: HeadInput, *, config: PatternConfig, patterns=PATTERNS,
                     static: StaticMasks | None = None) -> tuple[Approximation, ...]:
    """Apply each pattern to one head: mask, recomputed attention, and what it keeps.

    The reference is the full softmax of the real scores over the model's mask,
    which equals the model's own pattern (tested against captured internals).
    """
    with one_blas_thread():
        allowed, original, value, out_ref = _reference(head)
        static = static or static_masks(allowed, config, causal=head.causal)
        return tuple(_approximate(name, head, config, static, allowed, original, value, out_ref)
                     for name in patterns)


def _approximate(name, head, config, static, allowed, original, value, out_ref) -> Approximation:
    if name in SPARSE_PATTERNS:
        mask = _pattern_mask(name, head, config, static, allowed)
        approx, empty = masked_softmax(head.scores, mask)
        return _metrics(name, original, out_ref, approx, value, allowed, mask, sparse=True,
                        empty=empty, entries=mask.sum())
    if name == LINFORMER:
        return _linformer(head.scores, original, out_ref, value, allowed, static.projection)
    if name == LOWRANK:
        approx = best_rank_k(original, config.rank) * allowed
        return _metrics(name, original, out_ref, approx, value, allowed, allowed, sparse=False,
                        empty=np.zeros(allowed.shape[0], dtype=bool), entries=allowed.sum(), distribution=False)
    if name == SYNTHESIZER:
        approx, empty = masked_softmax(static.synth_logits, allowed)
        return _metrics(name, original, out_ref, approx, value, allowed, allowed, sparse=False,
                        empty=empty, entries=allowed.sum())
    raise ValueError(f"unknown pattern {name!r} (choose from {', '.join(PATTERNS)})")


def _linformer(scores, original, out_ref, value, allowed, projection) -> Approximation:
    """softmax(q (E K)^T * scale) (E V), E mixing the keys each query is allowed into k rows.

    q.(E K)^T = (q K^T) E^T, so the projected scores come straight from the real
    scores (position bias included).  Each row of E is a random weighted average;
    per query it is renormalised over the keys the model allows (for decoders:
    the past), which keeps the method causal and the effective attention
    ``P E`` (T_q, T_k) a distribution over positions.
    """
    s = np.where(allowed, np.asarray(scores, dtype=np.float64), 0.0)
    e = projection                                               # (k, T_k), rows sum to 1
    z = allowed @ e.T                                            # (T_q, k) E's weight on allowed keys
    usable = z > 1e-12
    proj_scores = (s @ e.T) / np.where(usable, z, 1.0)           # (T_q, k) q . (projected key r)
    p, empty = masked_softmax(proj_scores, usable)               # (T_q, k)
    effective = ((p / np.where(usable, z, 1.0)) @ e) * allowed   # (T_q, T_k)
    # k scores per query, but never more than the keys it may see (k >= N saves nothing)
    entries = np.minimum(allowed.sum(axis=1), e.shape[0]).sum()
    return _metrics(LINFORMER, original, out_ref, effective, value, allowed, allowed, sparse=False,
                    empty=empty, entries=entries)


def approximate_layer(internals: LayerInternals, *, config: PatternConfig,
                      patterns=PATTERNS) -> tuple[tuple[Approximation, ...], ...]:
    """approximate_head for every head of one layer (masks shared between heads)."""
    allowed = np.asarray(internals.mask, dtype=bool)
    static = static_masks(allowed, config, causal=internals.kind == DECODER)
    return tuple(approximate_head(HeadInput.from_internals(internals, h), config=config, patterns=patterns,
                                  static=static)
                 for h in range(internals.scores.shape[0]))


@dataclass(frozen=True)
class LayerMetrics:
    """Per-head metrics of every pattern for one layer (arrays (n_heads, n_patterns))."""

    patterns: tuple[str, ...]
    kept_mass: np.ndarray
    tv: np.ndarray
    kl: np.ndarray
    output_error: np.ndarray
    density: np.ndarray
    empty_rows: np.ndarray


def layer_metrics(internals: LayerInternals, *, config: PatternConfig, patterns=PATTERNS) -> LayerMetrics:
    """Scalar metrics of every pattern on every head of one layer: the all-heads summary.

    Sparse patterns are scored on their allowed entries only (a window keeps
    ~2% of a 512-token matrix), without building the dense matrices the
    one-head view draws; the result equals approximate_head's (tested).
    """
    allowed = np.asarray(internals.mask, dtype=bool)
    static = static_masks(allowed, config, causal=internals.kind == DECODER)
    n_heads = internals.scores.shape[0]
    table = np.full((6, n_heads, len(patterns)), np.nan)          # kept, tv, kl, error, density, empty
    with one_blas_thread():
        _fill_layer_table(table, internals, config, static, allowed, patterns)
    kept, tv, kl, err, density, empty = table
    return LayerMetrics(patterns=tuple(patterns), kept_mass=kept, tv=tv, kl=kl, output_error=err,
                        density=density, empty_rows=empty.astype(np.int64))


def _fill_layer_table(table, internals, config, static, allowed, patterns) -> None:
    for h in range(table.shape[1]):
        head = HeadInput.from_internals(internals, h)
        _, original, value, out_ref = _reference(head)
        for j, name in enumerate(patterns):
            if name == FULL:            # the reference itself: nothing lost by construction
                table[:, h, j] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
            elif name in SPARSE_PATTERNS:
                mask = _pattern_mask(name, head, config, static, allowed)
                table[:, h, j] = _sparse_summary(head.scores, original, out_ref, value, allowed, mask)
            else:
                a = _approximate(name, head, config, static, allowed, original, value, out_ref)
                table[:, h, j] = (a.kept_mass, a.tv, a.kl, a.output_error, a.density, a.empty_rows)


def _sparse_summary(scores, original, out_ref, value, allowed, mask) -> tuple[float, ...]:
    """(kept, tv, kl, output error, density, empty rows) of a masked softmax, from the mask's entries only."""
    n_q = mask.shape[0]
    valid = allowed.any(axis=1)
    rows, cols = np.nonzero(mask)                                  # row-major: rows ascending
    counts = np.bincount(rows, minlength=n_q)
    empty = (counts == 0) & valid
    out = np.zeros_like(out_ref)
    kept_rows = in_l1 = kl_rows = np.zeros(n_q)
    if rows.size:
        s = np.asarray(scores, dtype=np.float64)[rows, cols]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        row_max = np.repeat(np.maximum.reduceat(s, starts), np.diff(np.r_[starts, rows.size]))
        e = np.exp(s - row_max)
        a = e / np.bincount(rows, e, minlength=n_q)[rows]
        o = original[rows, cols]
        kept_rows = np.bincount(rows, o, minlength=n_q)
        in_l1 = np.bincount(rows, np.abs(o - a), minlength=n_q)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * (np.log(a) - np.log(np.maximum(o, 1e-300))), 0.0)
        kl_rows = np.bincount(rows, terms, minlength=n_q)
        out[rows[starts]] = np.add.reduceat(a[:, None] * value[cols], starts, axis=0)
    # mass outside the mask counts fully in the L1 distance; empty rows are fully lost
    tv_rows = np.where(empty, 1.0, 0.5 * (in_l1 + original.sum(axis=1) - kept_rows))
    n_valid = max(1, int(valid.sum()))
    ok = valid & ~empty
    ref_norm = np.linalg.norm(out_ref)
    return (float(kept_rows[valid].mean()) if valid.any() else float("nan"),
            float(tv_rows[valid].sum() / n_valid),
            float(kl_rows[ok].mean()) if ok.any() else float("nan"),
            float(np.linalg.norm(out_ref - out) / ref_norm) if ref_norm > 0 else float("nan"),
            float(mask.sum() / max(1, allowed.sum())),
            float(empty.sum()))


# ---------------------------------------------------------------- layers x heads summary

@dataclass(frozen=True)
class HeadSummary:
    """Where each head's attention goes, (n_layers, n_heads) arrays; the three shares sum to 1."""

    local: np.ndarray         # mass within `window` positions of the query
    global_: np.ndarray       # mass on global keys outside the window
    long_range: np.ndarray    # the rest: ordinary tokens further away
    mean_distance: np.ndarray  # mean |key_pos - centre| weighted by attention
    role: np.ndarray          # "local" / "global" / "long-range": the largest share
    window: int
    kept: np.ndarray          # (n_layers, n_heads, n_fixed) kept mass of each FIXED_PATTERNS mask
    patterns: tuple[str, ...] = FIXED_PATTERNS
    # A long result is summarised on evenly spaced query rows: how many (0: every row), and the largest
    # standard error of a share (local, global, long-range, kept) that the sampling leaves
    sampled_rows: int = 0
    stderr: float = 0.0


SUMMARY_ROWS = 128    # query rows a long result's layers x heads summary is estimated from
LAB_MAX_TOKENS = 512  # the one-head and one-layer lab of a longer causal text uses its first this-many tokens


def lab_prefix(internals: LayerInternals, n: int = LAB_MAX_TOKENS) -> tuple[LayerInternals, str]:
    """:func:`causal_prefix` and the page's sentence about it ('' when nothing was cut)."""
    cut = causal_prefix(internals, n)
    if cut is internals:
        return cut, ""
    total = internals.query.shape[1]
    return cut, (f"Long text: the patterns below run on the first {n:,} of its {total:,} tokens. A causal model's "
                 f"attention over them is exactly what it computes for them alone (no token sees a later one), "
                 f"and {n:,} keeps this within a few seconds.")


def summary_note(summary: "HeadSummary", n_queries: int) -> str:
    """The page's sentence about a sampled :func:`head_summary` ('' when every row was used)."""
    if not summary.sampled_rows:
        return ""
    return (f"Long text: estimated from {summary.sampled_rows} evenly spaced of its {n_queries:,} query tokens in "
            f"every layer; each share is within ±{summary.stderr:.1%} of its value over all tokens (the largest "
            f"standard error).")


def causal_prefix(internals: LayerInternals, n: int) -> LayerInternals:
    """The internals of a causal layer cut to its first ``n`` tokens: exactly what the model computes for
    those tokens alone (a query never sees a later key), at the lab's cost for ``n`` tokens."""
    import dataclasses
    if internals.kind != DECODER or internals.query.shape[1] <= n:
        return internals
    cut = {"query": internals.query[:, :n], "key": internals.key[:, :n], "value": internals.value[:, :n],
           "scores": internals.scores[:, :n, :n], "mask": internals.mask[:n, :n],
           "pattern": internals.pattern[:, :n, :n], "head_output": internals.head_output[:, :n]}
    if internals.hidden is not None:
        cut["hidden"] = internals.hidden[:n]
    if internals.value_out is not None:
        cut["value_out"] = internals.value_out[:, :n]
    return dataclasses.replace(internals, **cut)


def head_summary(pattern: np.ndarray, *, config: PatternConfig, causal: bool,
                 max_rows: int | None = None) -> HeadSummary:
    """Summarise a block's post-softmax ``pattern`` (n_layers, n_heads, T_q, T_k) head by head.

    Needs no internals: kept mass of a fixed mask is the pattern's mass inside it.  A long result's
    LazyPattern is summarised one layer at a time (every figure here is per layer and head); with
    ``max_rows``, on that many evenly spaced query rows only (a LazyPattern recomputes just those),
    which makes every share an estimate whose largest standard error is ``stderr``.
    """
    n_q = pattern.shape[2]
    if max_rows is not None and n_q > max_rows and not isinstance(pattern, np.ndarray):
        return _sampled_summary(pattern, config=config, causal=causal, max_rows=max_rows)
    if hasattr(pattern, "layers") and not isinstance(pattern, np.ndarray):
        import dataclasses
        parts = [head_summary(layer[None], config=config, causal=causal) for layer in pattern.layers()]
        return dataclasses.replace(parts[0], **{
            f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(parts[0])
            if isinstance(getattr(parts[0], f.name), np.ndarray) and getattr(parts[0], f.name).ndim >= 2})
    a = np.asarray(pattern, dtype=np.float32)
    n_q, n_k = a.shape[-2:]
    valid_rows = a.sum(axis=-1) > 0                                  # (L, H, T_q)
    n_rows = np.maximum(valid_rows.sum(axis=-1), 1)

    def share(mask):                                                  # mean row mass inside mask
        return np.einsum("lhqk,qk->lh", a, mask.astype(np.float32)) / n_rows

    local_mask = window_mask(n_q, n_k, config.window)
    glob = np.zeros((n_q, n_k), dtype=bool)
    glob[:, _positions(config.global_keys, n_k)] = True
    local = share(local_mask)
    global_ = share(glob & ~local_mask)
    long_range = np.clip(1.0 - local - global_, 0.0, 1.0)
    dist = np.abs(_offsets(n_q, n_k)).astype(np.float32)
    mean_distance = share(dist)
    shares = np.stack([local, global_, long_range], axis=-1)
    role = np.array(["local", "global", "long-range"])[np.argmax(shares, axis=-1)]
    static = static_masks(np.ones((n_q, n_k), dtype=bool), config, causal=causal)
    kept = np.stack([share(static.masks[p]) for p in FIXED_PATTERNS], axis=-1)
    return HeadSummary(local=local, global_=global_, long_range=long_range, mean_distance=mean_distance,
                       role=role, window=config.window, kept=kept)


def _sampled_summary(pattern, *, config: PatternConfig, causal: bool, max_rows: int) -> HeadSummary:
    """:func:`head_summary` over ``max_rows`` evenly spaced query rows of each layer (recomputed alone)."""
    n_layers, n_heads, n_q, n_k = pattern.shape
    rows = np.unique(np.linspace(0, n_q - 1, max_rows).round().astype(np.int64))
    local_mask = window_mask(n_q, n_k, config.window)[rows]
    glob = np.zeros((len(rows), n_k), dtype=bool)
    glob[:, _positions(config.global_keys, n_k)] = True
    static = static_masks(np.ones((n_q, n_k), dtype=bool), config, causal=causal)
    masks = [local_mask, glob & ~local_mask] + [static.masks[p][rows] for p in FIXED_PATTERNS]
    masks = np.stack(masks).astype(np.float32)                         # (2 + n_fixed, R, T_k)
    masks_by_row = np.ascontiguousarray(masks.transpose(1, 2, 0))      # (R, T_k, n_masks)
    dist = np.abs(_offsets(n_q, n_k)[rows]).astype(np.float32)
    shares = np.zeros((n_layers, n_heads, len(masks)))
    spread = np.zeros((n_layers, n_heads, len(masks)))
    mean_distance = np.zeros((n_layers, n_heads))
    with one_blas_thread():
        _sampled_layers(pattern, rows, masks, masks_by_row, dist, shares, spread, mean_distance)
    local, global_ = shares[..., 0], shares[..., 1]
    long_range = np.clip(1.0 - local - global_, 0.0, 1.0)
    role = np.array(["local", "global", "long-range"])[np.argmax(np.stack([local, global_, long_range], -1), -1)]
    return HeadSummary(local=local, global_=global_, long_range=long_range, mean_distance=mean_distance,
                       role=role, window=config.window, kept=shares[..., 2:], sampled_rows=len(rows),
                       stderr=float(spread.max()) if spread.size else 0.0)


def _sampled_layers(pattern, rows, masks, masks_by_row, dist, shares, spread, mean_distance) -> None:
    for layer in range(pattern.shape[0]):
        a = np.asarray(pattern[layer, :, rows], dtype=np.float32)    # (H, R, T_k)
        valid = a.sum(axis=-1) > 0                                      # (H, R)
        n_valid = np.maximum(valid.sum(axis=-1), 1)
        # (H, n_masks, R) row shares, one batched matrix product per query row
        per_row = np.matmul(a.transpose(1, 0, 2), masks_by_row).transpose(1, 2, 0).astype(np.float64)
        shares[layer] = per_row.sum(axis=-1) / n_valid[:, None]
        centred = np.where(valid[:, None], per_row - shares[layer][..., None], 0.0)
        spread[layer] = np.sqrt((centred ** 2).sum(axis=-1) / np.maximum(n_valid - 1, 1)[:, None]
                                / n_valid[:, None])
        mean_distance[layer] = np.einsum("hqk,qk->h", a, dist) / n_valid


def default_globals(tokens: TokenSeq | None) -> tuple[int, ...]:
    """Global positions: the special tokens ([CLS], [SEP], BOS...), or the first token when there are none."""
    if tokens is None or len(tokens) == 0:
        return (0,)
    special = np.flatnonzero(np.asarray(tokens.special, dtype=bool))
    return tuple(int(i) for i in special) if special.size else (0,)


# ---------------------------------------------------------------- cost model

@dataclass(frozen=True)
class CostRow:
    pattern: str
    length: int
    score_entries: float     # attention weights computed per head
    flops: float             # per head: scores, softmax, weighted sum (+ hashing / projections)
    memory_bytes: float      # float32 weights of one head + its q, k, v, output


def pattern_entries(name: str, n: int, config: PatternConfig, *, causal: bool = False) -> float:
    """Expected attention entries per head at length ``n`` (rows x keys each row scores)."""
    w, g = config.window, len(config.global_keys)
    half = 0.5 if causal else 1.0

    def band(width):                                   # a window of `width` keys each side
        return n * min(n, (width * (1 if causal else 2)) + 1)

    full = n * (n + 1) / 2 if causal else float(n * n)
    if name == FULL or name == SYNTHESIZER:
        entries = full
    elif name in (WINDOW, DILATED):
        entries = band(w)
    elif name == LONGFORMER:
        entries = band(w) + 2 * g * n * half
    elif name == BIGBIRD:
        entries = band(w) + 2 * g * n * half + config.n_random * n
    elif name == BLOCK:
        entries = n * min(n, config.block) * (0.5 if causal else 1.0)
    elif name == LSH:
        # Reformer sorts by bucket and attends within chunks of ~lsh_chunk (own + previous chunk).
        entries = config.n_hashes * n * min(n, 2 * config.lsh_chunk) * half
    elif name == LINFORMER:
        entries = float(n * min(n, config.rank))
    else:
        raise ValueError(f"no cost model for {name!r}")
    return float(min(entries, full))


def cost_model(lengths=DEFAULT_LENGTHS, *, config: PatternConfig, d_head: int = 64, causal: bool = False,
               patterns=(FULL, WINDOW, DILATED, LONGFORMER, BIGBIRD, BLOCK, LSH, LINFORMER, SYNTHESIZER),
               ) -> tuple[CostRow, ...]:
    """Analytic cost of one head of one layer for each pattern and length.

    FLOPs: 2*d per score (q.k), 5 per softmax entry, 2*d per weighted value;
    Synthesizer skips q.k; LSH adds the hashing; Linformer adds projecting K and V.
    Memory: float32 weights held at once plus q, k, v and the output (4*N*d).
    """
    rows = []
    for n in lengths:
        for name in patterns:
            e = pattern_entries(name, n, config, causal=causal)
            flops = (0 if name == SYNTHESIZER else 2 * d_head * e) + 5 * e + 2 * d_head * e
            if name == LSH:
                flops += 2 * 2 * n * d_head * (max(2, n // config.lsh_chunk) // 2) * config.n_hashes
            if name == LINFORMER:
                flops += 2 * 2 * config.rank * n * d_head
            memory = 4.0 * e + 4.0 * 4 * n * d_head
            rows.append(CostRow(pattern=name, length=int(n), score_entries=e, flops=float(flops),
                                memory_bytes=memory))
    return tuple(rows)


# --------------------------------------------------------------------------- the lab's settings

@dataclass(frozen=True)
class Knob:
    """One integer setting of the efficient-attention lab (a URL parameter of the page)."""

    name: str
    label: str
    default: int
    lo: int
    hi: int
    help: str

    def clamp(self, value) -> int:
        return min(self.hi, max(self.lo, int(value)))


KNOBS = (
    Knob("window", "Window w (each side)", 4, 0, 256, "Sliding window, dilated window, Longformer, BigBird"),
    Knob("dilation", "Dilation d", 2, 1, 32, "Dilated window: every d-th key"),
    Knob("block_size", "Block size", 8, 1, 512, "Block-local attention"),
    Knob("random", "Random keys per query", 2, 0, 64, "BigBird"),
    Knob("buckets", "LSH buckets", 8, 2, 64, "Reformer: buckets per hash round"),
    Knob("hashes", "LSH rounds", 2, 1, 8, "Reformer: a key is visible if it shares a bucket in any round"),
    Knob("rank", "Rank k", 8, 1, 256, "Linformer projection rows and the low-rank bound"),
    Knob("seed", "Seed", 0, 0, 10_000, "Every random choice: BigBird keys, LSH rotations, projections"),
)


def global_positions(choice: str, tokens: TokenSeq) -> tuple[int, ...]:
    """The lab's "global tokens" choice: special tokens, the first token only, or none."""
    if choice == "none":
        return ()
    if choice == "first":
        return (0,)
    return default_globals(tokens)


def pattern_config(knobs: dict, *, queries: TokenSeq, keys: TokenSeq) -> PatternConfig:
    """The PatternConfig for the lab's settings (``knobs``: the KNOBS by name, plus ``globals``)."""
    return PatternConfig(
        window=knobs["window"], dilation=knobs["dilation"], block=knobs["block_size"], n_random=knobs["random"],
        n_buckets=knobs["buckets"], n_hashes=knobs["hashes"], rank=knobs["rank"], seed=knobs["seed"],
        global_queries=global_positions(knobs["globals"], queries),
        global_keys=global_positions(knobs["globals"], keys))


def as_percent(frame, columns):
    """A copy of ``frame`` with the share ``columns`` times 100 (for percent columns)."""
    frame = frame.copy()
    for c in columns:
        frame[c] = frame[c] * 100
    return frame


def methods_markdown() -> str:
    """The table of methods: what each does, assumes, and when it breaks."""
    return "\n".join(["| method | what it does | assumes | breaks when |", "|---|---|---|---|"]
                     + [f"| **{m.title}** | {m.how} | {m.assumes} | {m.breaks} |" for m in METHODS])
