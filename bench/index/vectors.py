"""A deterministic generator of embedding-like vectors (1536 dims, unit length).

Why not uniform random vectors: in 1536 dimensions they are all nearly orthogonal (every
pair at cosine 0 +- 0.03), so a query's 10 "nearest" neighbours are no nearer than the
rest and any approximate index looks broken. Text embeddings (OpenAI
text-embedding-3-small among them) are different in four ways this model reproduces:

1. **Anisotropy**: every vector shares a common direction, so unrelated texts sit at
   cosine ~0.1-0.2, not 0 (``COMMON``).
2. **Low intrinsic dimension**: the variance lives in a few hundred directions, not 1536.
   All structured components are drawn in a random ``RANK``-dim subspace whose variances
   decay as a power law (lambda_i ~ (i+1)^-0.5, participation ratio ~270), plus a small
   isotropic part in the full space (``ISO``).
3. **Hierarchy**: topic -> document -> segment (a few adjacent chunks) -> chunk. Chunks of
   one segment are near duplicates in meaning (cosine ~0.65-0.7), of one document
   ~0.55, of one topic ~0.4; a workspace (one company's jargon) adds a small shared
   component. A global pool of ``TOPICS`` topics is shared by all workspaces, each
   workspace drawing a Dirichlet mixture over a subset of them: other tenants' rows on
   the same topic compete with a workspace's own rows, which is what makes a filtered
   ANN search lose rows.
4. **Queries are not documents**: a query vector is drawn from the same process with a
   larger own component (short text): 75 % target an existing segment of the workspace
   (a question about a meeting that happened), 25 % only a topic of the workspace.
   No query is a copy of a stored vector.

Each vector is ``normalize(sum_k sqrt(w_k) * component_k)`` with unit-variance components,
so the expected cosine of two vectors is the sum of the weights of the components they
share. ``bench.index`` measures and reports the resulting similarity distribution.

Deterministic from ``seed``; rows are generated in blocks of ``BLOCK`` (float32), each from
its own RNG stream, so any row range can be regenerated without the rest.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

DIM = 1536
RANK = 512
TOPICS = 300
BLOCK = 2000
SPECTRUM_EXPONENT = 0.5

# Variance weights of a stored chunk's components (sum 1).
COMMON, WORKSPACE, TOPIC, DOC, SEGMENT, CHUNK, ISO = 0.12, 0.04, 0.22, 0.16, 0.14, 0.26, 0.06
# A query's weights (sum 1): the same shared parts, a larger own part.
Q_COMMON, Q_WORKSPACE, Q_TOPIC, Q_DOC, Q_SEGMENT, Q_OWN, Q_ISO = (
    0.12,
    0.03,
    0.18,
    0.12,
    0.10,
    0.40,
    0.05,
)
Q_SEGMENT_SHARE = 0.75
SEGMENT_CHUNKS = 6
SPECIFICITY_SIGMA = 0.5

#: Default workspace shares of the rows: very different sizes, one holding 0.1 %.
DEFAULT_SHARES = (0.60, 0.25, 0.10, 0.049, 0.001)

WORDS = [
    "pricing",
    "roadmap",
    "hiring",
    "churn",
    "renewal",
    "board",
    "forecast",
    "pipeline",
    "launch",
    "security",
    "audit",
    "migration",
    "budget",
    "option",
    "pool",
    "contract",
    "onboarding",
    "latency",
    "outage",
    "retention",
    "partner",
    "quarter",
    "milestone",
    "invoice",
    "compliance",
    "customer",
    "feedback",
    "design",
    "review",
    "deadline",
]


def workspace_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(int=(0xB1D3 << 112) | (0x4000 << 64) | (0x8000 << 48) | i)


def user_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(int=(0xB1D4 << 112) | (0x4000 << 64) | (0x8000 << 48) | i)


def row_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(int=(0xB1D5 << 112) | (0x4000 << 64) | (0x8000 << 48) | i)


def row_index(u: uuid.UUID) -> int:
    return u.int & ((1 << 48) - 1)


@dataclass
class Corpus:
    """The structure of ``rows`` vectors in ``len(shares)`` workspaces.

    Per row: workspace, topic, document, segment (indices), all decided up front (a few
    MB); the vectors themselves are made on demand, block by block."""

    rows: int
    shares: tuple[float, ...] = DEFAULT_SHARES
    seed: int = 1
    ws_rows: list[int] = field(init=False)
    row_ws: np.ndarray = field(init=False)
    row_topic: np.ndarray = field(init=False)
    row_doc: np.ndarray = field(init=False)
    row_seg: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        self.basis = _basis(rng)  # RANK x DIM, orthonormal rows
        self.scale = _spectrum_scale()  # RANK, sqrt of the variances (sum of squares 1)
        common = rng.standard_normal(DIM)
        self.common = (common / np.linalg.norm(common)).astype(np.float32)
        self.topic_coef = self._coefs(rng, TOPICS)
        n_ws = len(self.shares)
        self.ws_coef = self._coefs(rng, n_ws)
        counts = [max(1, round(self.rows * s)) for s in self.shares]
        counts[0] += self.rows - sum(counts)
        self.ws_rows = counts
        # Each workspace: a Dirichlet mixture over a subset of the global topics.
        self.ws_topics: list[np.ndarray] = []
        self.ws_topic_p: list[np.ndarray] = []
        docs: list[tuple[int, int, int]] = []  # (workspace, topic, chunks)
        for w, n in enumerate(counts):
            k = int(min(80, max(3, n // 500)))
            topics = rng.choice(TOPICS, size=k, replace=False)
            p = rng.dirichlet(np.full(k, 0.7))
            self.ws_topics.append(topics)
            self.ws_topic_p.append(p)
            left = n
            while left > 0:
                size = int(min(left, max(1, min(150, round(rng.lognormal(math.log(12), 1.0))))))
                docs.append((w, int(rng.choice(topics, p=p)), size))
                left -= size
        order = rng.permutation(len(docs))  # tenants' documents arrive interleaved
        self.doc_ws = np.array([docs[i][0] for i in order], dtype=np.int16)
        self.doc_topic = np.array([docs[i][1] for i in order], dtype=np.int16)
        sizes = np.array([docs[i][2] for i in order], dtype=np.int64)
        self.doc_coef = self._coefs(rng, len(docs))
        self.row_doc = np.repeat(np.arange(len(docs), dtype=np.int32), sizes)
        self.row_ws = self.doc_ws[self.row_doc]
        self.row_topic = self.doc_topic[self.row_doc]
        # Segments: runs of SEGMENT_CHUNKS adjacent chunks of a document.
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pos = np.arange(self.rows) - np.repeat(starts, sizes)
        seg_in_doc = pos // SEGMENT_CHUNKS
        segs_per_doc = (sizes + SEGMENT_CHUNKS - 1) // SEGMENT_CHUNKS
        seg_base = np.concatenate([[0], np.cumsum(segs_per_doc)[:-1]])
        self.row_seg = (seg_base[self.row_doc] + seg_in_doc).astype(np.int32)
        self.seg_coef = self._coefs(rng, int(segs_per_doc.sum()))
        self.n_docs = len(docs)

    def _coefs(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` unit-variance components in subspace coordinates (power-law spectrum)."""
        return (rng.standard_normal((n, RANK)) * self.scale).astype(np.float32)

    # ------------------------------------------------------------------ vectors
    def block(self, b: int) -> np.ndarray:
        """Rows ``[b*BLOCK, (b+1)*BLOCK)`` (fewer at the end) as float32 unit vectors."""
        lo, hi = b * BLOCK, min(self.rows, (b + 1) * BLOCK)
        n = hi - lo
        rng = np.random.default_rng([self.seed, 1, b])
        own = rng.standard_normal((n, RANK)).astype(np.float32) * self.scale
        # How specific a chunk is varies (boilerplate vs. dense detail): its own part's
        # variance is CHUNK times a log-normal factor (median 1).
        own *= np.sqrt(rng.lognormal(0.0, SPECIFICITY_SIGMA, (n, 1))).astype(np.float32)
        sub = (
            math.sqrt(WORKSPACE) * self.ws_coef[self.row_ws[lo:hi]]
            + math.sqrt(TOPIC) * self.topic_coef[self.row_topic[lo:hi]]
            + math.sqrt(DOC) * self.doc_coef[self.row_doc[lo:hi]]
            + math.sqrt(SEGMENT) * self.seg_coef[self.row_seg[lo:hi]]
            + math.sqrt(CHUNK) * own
        )
        iso = rng.standard_normal((n, DIM)).astype(np.float32) * np.float32(math.sqrt(ISO / DIM))
        x = sub @ self.basis + iso + np.float32(math.sqrt(COMMON)) * self.common
        return _normalize(x)

    def vectors(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` (regenerated from their blocks)."""
        parts = []
        for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            v = self.block(b)
            start = b * BLOCK
            parts.append(v[max(lo, start) - start : min(hi, start + len(v)) - start])
        return np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)

    def rows_at(self, indices: np.ndarray) -> np.ndarray:
        """The vectors of sorted row ``indices`` (each block generated once)."""
        out = np.empty((len(indices), DIM), np.float32)
        blocks = indices // BLOCK
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            out[sel] = self.block(int(b))[indices[sel] - b * BLOCK]
        return out

    def blocks(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, vectors)`` for rows ``[lo, hi)`` in pieces of at most BLOCK."""
        hi = self.rows if hi is None else hi
        pos = lo
        while pos < hi:
            end = min(hi, (pos // BLOCK + 1) * BLOCK)
            yield pos, self.vectors(pos, end)
            pos = end

    def content(self, i: int) -> str:
        """A ~400-character text for row ``i`` (the index does not read it)."""
        d = int(self.row_doc[i])
        words = [WORDS[(i * 7 + j * 13 + d) % len(WORDS)] for j in range(56)]
        return f"doc {d} chunk {i}: " + " ".join(words)

    # ------------------------------------------------------------------ queries
    def queries(self, n: int, seed_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` query vectors and their workspaces: an equal share per workspace (the
        first workspaces get the remainder), in an interleaved order."""
        rng = np.random.default_rng([self.seed, 2, seed_offset])
        n_ws = len(self.shares)
        ws = np.array([i % n_ws for i in range(n)], dtype=np.int16)
        rng.shuffle(ws)
        out = np.empty((n, DIM), np.float32)
        for qi, w in enumerate(ws):
            members = np.flatnonzero(self.row_ws == w)
            own = rng.standard_normal(RANK).astype(np.float32) * self.scale
            sub = math.sqrt(Q_WORKSPACE) * self.ws_coef[w] + math.sqrt(Q_OWN) * own
            if rng.random() < Q_SEGMENT_SHARE:
                r = int(rng.choice(members))
                sub = (
                    sub
                    + math.sqrt(Q_TOPIC) * self.topic_coef[self.row_topic[r]]
                    + math.sqrt(Q_DOC) * self.doc_coef[self.row_doc[r]]
                    + math.sqrt(Q_SEGMENT) * self.seg_coef[self.row_seg[r]]
                )
            else:
                t = int(rng.choice(self.ws_topics[w], p=self.ws_topic_p[w]))
                # a new document on a known topic: topic + a fresh document component
                fresh = rng.standard_normal(RANK).astype(np.float32) * self.scale
                sub = (
                    sub
                    + math.sqrt(Q_TOPIC) * self.topic_coef[t]
                    + math.sqrt(Q_DOC + Q_SEGMENT) * fresh
                )
            iso = rng.standard_normal(DIM).astype(np.float32) * np.float32(math.sqrt(Q_ISO / DIM))
            out[qi] = sub @ self.basis + iso + np.float32(math.sqrt(Q_COMMON)) * self.common
        return _normalize(out), ws


def _basis(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((DIM, RANK)))
    return np.ascontiguousarray(q.T).astype(np.float32)


def _spectrum_scale() -> np.ndarray:
    lam = (np.arange(RANK) + 1.0) ** -SPECTRUM_EXPONENT
    lam /= lam.sum()
    return np.sqrt(lam).astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------- statistics
def _pct(a: np.ndarray) -> dict[str, float]:
    a = a[np.isfinite(a)]  # a workspace smaller than k has fewer than k neighbours
    qs = np.percentile(a, [5, 25, 50, 75, 95])
    return {
        "p5": round(float(qs[0]), 3),
        "p25": round(float(qs[1]), 3),
        "p50": round(float(qs[2]), 3),
        "p75": round(float(qs[3]), 3),
        "p95": round(float(qs[4]), 3),
        "mean": round(float(a.mean()), 3),
    }


def exact_topk(
    corpus: Corpus, probes: np.ndarray, probe_ws: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by cosine within each probe's workspace, one pass over the corpus.

    ``exclude``: per probe, a row index not to return (the probe itself), or -1.
    Returns (indices, similarities), each ``len(probes) x k``, best first."""
    n = len(probes)
    best_i = np.full((n, k), -1, dtype=np.int64)
    best_s = np.full((n, k), -np.inf, dtype=np.float32)
    for lo, v in corpus.blocks():
        sims = probes @ v.T  # n x block
        same = probe_ws[:, None] == corpus.row_ws[lo : lo + len(v)][None, :]
        sims[~same] = -np.inf
        if exclude is not None:
            rel = exclude - lo
            hit = (rel >= 0) & (rel < len(v))
            sims[np.flatnonzero(hit), rel[hit]] = -np.inf
        idx = np.broadcast_to(np.arange(lo, lo + len(v)), sims.shape)
        all_s = np.concatenate([best_s, sims], axis=1)
        all_i = np.concatenate([best_i, idx], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    return best_i, best_s


def similarity_stats(
    corpus: Corpus, queries: np.ndarray, query_ws: np.ndarray, samples: int = 1000
) -> tuple[dict[str, object], np.ndarray]:
    """The measured similarity distribution, and the queries' exact top-10 (row indices).

    * stored vector -> its nearest other stored vector of the same workspace;
    * random pairs (any workspace) and random pairs within one workspace;
    * query -> its 1st and 10th exact neighbour in its workspace.
    """
    rng = np.random.default_rng([corpus.seed, 3])
    pick = np.sort(rng.choice(corpus.rows, size=min(samples, corpus.rows), replace=False))
    sample_vecs = corpus.rows_at(pick)
    nn_i, nn_s = exact_topk(corpus, sample_vecs, corpus.row_ws[pick], 1, exclude=pick)
    a = rng.integers(0, len(pick), 4000)
    b = rng.integers(0, len(pick), 4000)
    keep = a != b
    rand = np.einsum("ij,ij->i", sample_vecs[a[keep]], sample_vecs[b[keep]])
    same_ws = corpus.row_ws[pick][a] == corpus.row_ws[pick][b]
    rand_same = rand[same_ws[keep]]
    truth_i, truth_s = exact_topk(corpus, queries, query_ws, 10, exclude=None)
    same_doc = corpus.row_doc[pick] == corpus.row_doc[nn_i[:, 0]]
    stats: dict[str, object] = {
        "nearest_neighbour": _pct(nn_s[:, 0]),
        "nearest_neighbour_same_document_share": round(float(same_doc.mean()), 3),
        "random_pairs": _pct(rand),
        "random_pairs_same_workspace": _pct(rand_same) if len(rand_same) > 10 else None,
        "query_top1": _pct(truth_s[:, 0]),
        "query_top10": _pct(truth_s[:, 9]),
        "query_gap_top1_top10": _pct(truth_s[:, 0] - truth_s[:, 9]),
        "samples": int(len(pick)),
        "random_pair_count": int(keep.sum()),
    }
    return stats, truth_i
