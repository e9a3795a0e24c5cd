"""How big a freshly built vector index is, estimated from pgvector's page layout: the
yardstick of the REINDEX policy's bloat rule (worker/maintenance/reindex.py).

Why an estimate: VACUUM never shrinks an HNSW index, so after a large delete it stays
big while live rows drop; comparing its pages with what a build of the live rows would
take says how much a rebuild gives back, without building one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.maintenance.reindex import VectorIndex

PAGE_USABLE_BYTES = 8192 - 24 - 8  # page header, HNSW special space
HNSW_ELEMENT_HEADER = 72  # type/level/deleted/version, 10 heap TIDs, neighbour TID, pad
VECTOR_HEADER = 8  # varlena length + dim + unused (vector, halfvec); + bit length (bit)
ITEM_POINTER = 6
ITEM_ID = 4


def _vector_bytes(column_type: str) -> int | None:
    """On-disk size of one indexed value: ``vector(n)``, ``halfvec(n)`` or ``bit(n)`` (the
    binary-quantized expression: n/8 bytes after the varlena and bit-length words); None
    if unknown."""
    if "(" not in column_type:
        return None
    base, _, rest = column_type.partition("(")
    dims = rest.rstrip(")")
    if not dims.isdigit():
        return None
    bits = {"vector": 32, "halfvec": 16, "bit": 1}.get(base.split(".")[-1])
    return None if bits is None else VECTOR_HEADER + math.ceil(bits * int(dims) / 8)


def expected_pages(index: VectorIndex) -> int | None:
    """Pages an HNSW index over ``live_rows`` rows takes when freshly built (estimate)."""
    value = _vector_bytes(index.column_type)
    if value is None or index.method != "hnsw":
        return None
    element = math.ceil((HNSW_ELEMENT_HEADER + value) / 8) * 8
    m = max(index.m, 2)
    neighbours = (2 + 1 / (m - 1)) * m
    neighbour = math.ceil((4 + neighbours * ITEM_POINTER) / 8) * 8
    per_page = max(1, PAGE_USABLE_BYTES // (element + neighbour + 2 * ITEM_ID))
    if element + neighbour + 2 * ITEM_ID > PAGE_USABLE_BYTES:  # huge vectors: 2 pages
        return 1 + 2 * index.live_rows
    return 1 + math.ceil(index.live_rows / per_page)  # + metapage


def bloat_estimate(index: VectorIndex) -> float:
    """Estimated wasted fraction of the index's pages (0..1), from its size."""
    expected = expected_pages(index)
    if expected is None or index.pages <= 0:
        return 0.0
    return max(0.0, 1.0 - expected / index.pages)
