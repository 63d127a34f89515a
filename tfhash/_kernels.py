"""The exact index's compiled k-nearest-neighbour kernel (Numba).

Hamming distances are small integers, so the k nearest of a query are found by counting, not with a heap:
candidates at or under the current k-th distance are kept in scan order with a count per distance, the
bound drops as soon as k of them lie at or under a smaller one, and a final counting sort orders them by
distance with equal distances in database order (the order every tfhash index promises). The distances of
a block of database codes are computed for a block of queries while the codes sit in cache, with the codes
transposed to one contiguous row per word so the XOR + popcount loop compiles to vector instructions.
"""

import os

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

QUERY_BLOCK = 32  # queries sharing one pass over a database block
# Below this many distance computations, threads cost more than they save (the index's and the metrics' rule).
PARALLEL_MIN_WORK = 10_000_000
DATABASE_BLOCK = 2048  # database codes per block (2,048 x 8 bytes per word: in the first cache levels)


def threads_for(num_queries, num_items, n_jobs=None):
    """Worker threads for ``num_queries`` queries over ``num_items`` codes: ``n_jobs`` when given, else every
    core once the work reaches :data:`PARALLEL_MIN_WORK` and one thread below it; never more than queries."""
    if n_jobs is None:
        n_jobs = 1 if num_queries * max(1, num_items) < PARALLEL_MIN_WORK else (os.cpu_count() or 1)
    return max(1, min(int(n_jobs), num_queries))


@intrinsic
def _popcount(typingctx, word):
    """The number of set bits of an unsigned integer (LLVM's ctpop: one instruction, vectorised in loops)."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return word(word), codegen


@njit(nogil=True, boundscheck=False, cache=True)
def transpose_block(database, offset, size, columns):
    """Codes ``offset .. offset + size`` of ``database [nb, words]`` into ``columns [words, >= size]``: one
    contiguous row per word, which the distance loop reads as vectors."""
    for j in range(size):
        for w in range(database.shape[1]):
            columns[w, j] = database[offset + j, w]


@njit(nogil=True, boundscheck=False, cache=True)
def block_distances(queries, row, columns, size, distances):
    """Hamming distances of query ``row`` to the ``size`` codes held in ``columns`` (see
    :func:`transpose_block`), into ``distances[:size]``."""
    column, word = columns[0], queries[row, 0]
    for j in range(size):
        distances[j] = _popcount(word ^ column[j])
    for w in range(1, columns.shape[0]):
        column, word = columns[w], queries[row, w]
        for j in range(size):
            distances[j] += _popcount(word ^ column[j])


@njit(nogil=True, boundscheck=False, cache=True)
def _keep_nearest(kept_distance, kept_position, per_distance, n, k):
    """Of ``n >= k`` kept codes, keeps the k nearest: the smallest t with k codes at or under it, those under t
    and, of those at t, the earliest (later ones lose the tie). Returns the count kept and the new bound t - 1:
    from now on only distances under t can enter."""
    total, t = 0, 0
    for v in range(per_distance.shape[0]):
        total += per_distance[v]
        if total >= k:
            t = v
            break
    at_t = k - (total - per_distance[t])
    kept, seen = 0, 0
    for j in range(n):
        d = kept_distance[j]
        if d < t or (d == t and seen < at_t):
            seen += d == t
            kept_distance[kept] = d
            kept_position[kept] = kept_position[j]
            kept += 1
    per_distance[t:] = 0
    per_distance[t] = at_t
    return kept, t - 1


@njit(nogil=True, boundscheck=False, cache=True)
def _sort_into(kept_distance, kept_position, held, k, slots, out_distances, out_positions):
    """Counting sort of the ``held`` kept codes by distance into the first k places of the output rows; equal
    distances stay in scan (position) order."""
    slots[:] = 0
    for j in range(held):
        slots[kept_distance[j] + 1] += 1
    for v in range(1, slots.shape[0]):
        slots[v] += slots[v - 1]
    for j in range(held):
        d = kept_distance[j]
        place = slots[d]
        slots[d] += 1
        if place < k:
            out_distances[place] = d
            out_positions[place] = kept_position[j]


@njit(nogil=True, boundscheck=False, cache=True)
def knn(queries, database, k, out_distances, out_positions, start, stop):
    """Fills rows ``start:stop`` of ``out_distances`` / ``out_positions`` ``[nq, k]`` with the k nearest
    database positions of those queries (``queries [nq, words]``, ``database [nb, words]``, one unsigned
    dtype; ``k <= nb``), ascending distance, ties by position. Releases the GIL: threads may fill
    disjoint rows at once."""
    count, words = database.shape
    bits = 8 * database.itemsize * words
    block = DATABASE_BLOCK
    distances = np.empty(block, np.int64)
    columns = np.empty((words, block), database.dtype)
    slots = np.empty(bits + 2, np.int64)
    for first in range(start, stop, QUERY_BLOCK):
        rows = min(first + QUERY_BLOCK, stop) - first
        kept_distance = np.empty((rows, k + block), np.int32)
        kept_position = np.empty((rows, k + block), np.int64)
        per_distance = np.zeros((rows, bits + 1), np.int64)
        bound = np.full(rows, bits, np.int64)  # a code is kept when its distance is <= bound
        held = np.zeros(rows, np.int64)
        for offset in range(0, count, block):
            size = min(block, count - offset)
            transpose_block(database, offset, size, columns)
            for r in range(rows):
                limit = bound[r]
                if limit < 0:
                    continue  # k codes at distance 0 already: nothing later can enter
                block_distances(queries, first + r, columns, size, distances)
                hits = 0
                for j in range(size):
                    hits += distances[j] <= limit
                if hits == 0:
                    continue
                n = held[r]
                for j in range(size):
                    d = distances[j]
                    if d <= limit:
                        kept_distance[r, n] = d
                        kept_position[r, n] = offset + j
                        per_distance[r, d] += 1
                        n += 1
                if n >= k:
                    n, bound[r] = _keep_nearest(kept_distance[r], kept_position[r], per_distance[r], n, k)
                held[r] = n
        for r in range(rows):
            _sort_into(kept_distance[r], kept_position[r], held[r], k, slots, out_distances[first + r],
                       out_positions[first + r])


@njit(nogil=True, cache=True)
def _grown(array, size):
    """``array`` copied into one at least ``size`` long (doubling, so appends cost O(1) on average)."""
    grown = np.empty(max(size, 2 * array.shape[0]), array.dtype)
    grown[:array.shape[0]] = array
    return grown


@njit(nogil=True, boundscheck=False, cache=True)
def within_radius(queries, database, radius, start, stop):
    """Every database code within Hamming distance ``radius`` (inclusive) of queries ``start:stop``:
    ``(counts [stop - start], distances, positions)``, the hits of those queries in turn, each query's by
    ascending distance, ties by position. Same blocked scan as :func:`knn`; the hits of a block of queries
    are ordered by one counting sort on (query, distance), which keeps positions ascending. Releases the
    GIL: threads may take disjoint query ranges at once."""
    count, words = database.shape
    bits = 8 * database.itemsize * words
    block = DATABASE_BLOCK
    distances = np.empty(block, np.int64)
    columns = np.empty((words, block), database.dtype)
    counts = np.zeros(stop - start, np.int64)
    hit_distance = np.empty(1024, np.int32)
    hit_position = np.empty(1024, np.int64)
    hit_row = np.empty(1024, np.int64)
    out_distance = np.empty(1024, np.int32)
    out_position = np.empty(1024, np.int64)
    written = 0
    slots = np.empty(QUERY_BLOCK * (bits + 1) + 1, np.int64)
    for first in range(start, stop, QUERY_BLOCK):
        rows = min(first + QUERY_BLOCK, stop) - first
        held = 0
        for offset in range(0, count, block):
            size = min(block, count - offset)
            transpose_block(database, offset, size, columns)
            for r in range(rows):
                block_distances(queries, first + r, columns, size, distances)
                hits = 0
                for j in range(size):  # counted first: a loop without stores vectorises
                    hits += distances[j] <= radius
                if hits == 0:
                    continue
                if held + hits > hit_distance.shape[0]:
                    hit_distance = _grown(hit_distance, held + hits)
                    hit_position = _grown(hit_position, held + hits)
                    hit_row = _grown(hit_row, held + hits)
                for j in range(size):
                    if distances[j] <= radius:
                        hit_distance[held] = distances[j]
                        hit_position[held] = offset + j
                        hit_row[held] = r
                        held += 1
        buckets = rows * (bits + 1)
        slots[:buckets + 1] = 0
        for h in range(held):
            slots[hit_row[h] * (bits + 1) + hit_distance[h] + 1] += 1
            counts[first - start + hit_row[h]] += 1
        for v in range(1, buckets + 1):
            slots[v] += slots[v - 1]
        if written + held > out_distance.shape[0]:
            out_distance = _grown(out_distance, written + held)
            out_position = _grown(out_position, written + held)
        for h in range(held):
            key = hit_row[h] * (bits + 1) + hit_distance[h]
            place = written + slots[key]
            slots[key] += 1
            out_distance[place] = hit_distance[h]
            out_position[place] = hit_position[h]
        written += held
    return counts, out_distance[:written], out_position[:written]
