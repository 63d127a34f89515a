"""Multi-index hashing kernels (Numba): exact Hamming search without a scan.

Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with multi-index hashing" (TPAMI 2014). A code
of b bits is cut into m disjoint substrings, and each substring indexes a table of the rows. If two codes differ
in r = m r' + a bits (0 <= a < m), then some substring differs in at most r' bits (Sec. 3, pigeonhole). The
search probes the tables in the order (r', j) = (0, 0), (0, 1), ..., (1, 0), ...: probe (r', j) visits every
bucket of table j whose key is exactly r' bits from the query's substring j. A code not found after probe
(r', j) differs from the query in at least r' + 1 bits in substrings 0..j and at least r' bits in the others,
so every code within m r' + j bits has been found (the radius the probes guarantee). k-NN stops as soon as k
found codes lie within that radius (Sec. 4.2's incremental search); the codes at the k-th distance are then all
found, so ties resolve by row as in the flat scan. A code met again in a later probe is skipped by recomputing
which probe met it first, the smallest (d_j, j) over its substring distances, which needs no per-query marker.

A table addresses its buckets directly by the substring's low bits (about log2 n of them, at most
``DIRECT_BITS``) and keeps each bucket's rows ordered by the substring's remaining high bits, then by row, so
the rows of one key are found by a binary search within its bucket.
"""

import numpy as np
from numba import njit

from tfhash._kernels import _grown, _popcount

DIRECT_BITS = 24  # a table's offsets address at most this many bits of its substring (2**24 + 1 offsets)
SCAN_WORK = 4096  # a query may always read this many buckets and rows before a scan is thought cheaper


@njit(nogil=True, boundscheck=False, cache=True, inline="always")
def substring(codes, row, start, length):
    """Bits ``start .. start + length`` (lsb-first, the index's bit order) of code ``row`` of ``codes``
    ``[n, bytes]`` as an integer; ``length <= 32``."""
    first, last = start >> 3, (start + length - 1) >> 3
    value = np.uint64(0)
    for byte in range(last, first - 1, -1):
        value = (value << np.uint64(8)) | np.uint64(codes[row, byte])
    return (value >> np.uint64(start & 7)) & ((np.uint64(1) << np.uint64(length)) - np.uint64(1))


@njit(nogil=True, boundscheck=False, cache=True)
def _counting_pass(codes, start, length, shift, width, order, out, counts):
    """``order`` stably sorted into ``out`` by bits ``shift .. shift + width`` of each row's substring;
    ``counts`` (``2**width + 1``) ends as the offsets of those values."""
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    counts[:] = 0
    for i in range(order.shape[0]):
        counts[((substring(codes, np.int64(order[i]), start, length) >> np.uint64(shift)) & mask) + 1] += 1
    for v in range(1, counts.shape[0]):
        counts[v] += counts[v - 1]
    filled = counts[:-1].copy()
    for i in range(order.shape[0]):
        value = (substring(codes, np.int64(order[i]), start, length) >> np.uint64(shift)) & mask
        out[filled[value]] = order[i]
        filled[value] += 1


@njit(nogil=True, boundscheck=False, cache=True)
def build_table(codes, count, start, length, direct, offsets, rows):
    """Places rows ``0 .. count`` of ``codes`` by their substring: bucket v (the substring's low ``direct`` bits)
    holds ``rows[offsets[v]:offsets[v + 1]]``, ordered by the substring's high bits, then by row. Stable
    counting sorts, the high bits at most 16 at a time, then the low bits: linear in ``count``."""
    order = np.arange(count).astype(rows.dtype)
    spare = np.empty(count, rows.dtype)
    counts = np.empty((1 << 16) + 1, np.int64)
    shift = direct
    while shift < length:
        width = min(16, length - shift)
        _counting_pass(codes, start, length, shift, width, order, spare, counts[:(1 << width) + 1])
        order, spare = spare, order
        shift += width
    _counting_pass(codes, start, length, 0, direct, order, rows, offsets)


@njit(nogil=True, boundscheck=False, cache=True)
def _key_range(codes, table_rows, low, high, start, length, direct, key):
    """The part of bucket ``[low, high)`` holding the rows whose whole substring is ``key`` (the bucket is
    ordered by the substring's high bits): a binary search on each end."""
    if length == direct:
        return low, high
    wanted = key >> np.uint64(direct)
    first, last = low, high
    while first < last:
        middle = (first + last) // 2
        if substring(codes, np.int64(table_rows[middle]), start, length) >> np.uint64(direct) < wanted:
            first = middle + 1
        else:
            last = middle
    end = high
    last = first
    while last < end:
        middle = (last + end) // 2
        if substring(codes, np.int64(table_rows[middle]), start, length) >> np.uint64(direct) <= wanted:
            last = middle + 1
        else:
            end = middle
    return first, last


@njit(nogil=True, boundscheck=False, cache=True)
def _next_combination(positions, r, length):
    """Steps ``positions[:r]`` (ascending bit positions) to the next r-subset of ``range(length)``; False after
    the last."""
    i = r - 1
    while i >= 0 and positions[i] == length - r + i:
        i -= 1
    if i < 0:
        return False
    positions[i] += 1
    for j in range(i + 1, r):
        positions[j] = positions[j - 1] + 1
    return True


@njit(nogil=True, cache=True)
def _binomial(n, r):
    """The number of keys r bits from a key of n bits."""
    out = 1
    for i in range(r):
        out = out * (n - i) // (i + 1)
    return out


@njit(nogil=True, boundscheck=False, cache=True)
def _read_bucket(codes, words, query_words, q, table_rows, low, high, count, starts, lengths, keys, j, r, key, k,
                 bound, held, found_distance, found_row, per_distance):
    """Reads the rows ``low .. high`` of table j (those whose substring j is ``key``, r bits from the query's):
    each one first met by this probe and within ``bound`` joins the found ones. Returns the new ``held``, the
    new bound and the found arrays (possibly grown)."""
    m = starts.shape[0]
    previous = np.int64(-1)
    for p in range(low, high):
        row = np.int64(table_rows[p])
        # A damaged table opened unverified: a row out of range, out of order or in a bucket not its own is passed
        # over, so such damage can lose codes but never repeat or invent one.
        if row >= count or row <= previous:
            continue
        previous = row
        distance = 0
        for w in range(words.shape[1]):
            distance += _popcount(words[row, w] ^ query_words[q, w])
        if distance > bound:
            continue  # farther than k codes found already (or than the radius): never an answer
        if substring(codes, row, starts[j], lengths[j]) != key:
            continue
        first = True  # was this probe the first to meet the row?
        for other in range(m):
            if other != j:
                d = _popcount(substring(codes, row, starts[other], lengths[other]) ^ keys[other])
                first = first and not (d < r or (d == r and other < j))
        if not first:
            continue
        if held == found_distance.shape[0]:
            found_distance = _grown(found_distance, held + 1)
            found_row = _grown(found_row, held + 1)
        found_distance[held] = distance
        found_row[held] = row
        held += 1
        per_distance[distance] += 1
        if k > 0 and held >= k:  # the k-th smallest distance found so far
            total, bound = 0, 0
            while total + per_distance[bound] < k:
                total += per_distance[bound]
                bound += 1
    return held, bound, found_distance, found_row


@njit(nogil=True, boundscheck=False, cache=True)
def _search_one(query_bytes, query_words, q, codes, words, starts, lengths, directs, bases, offsets, rows, count,
                radius, k, found_distance, found_row):
    """The candidates of query ``q`` found by probing until either k of them lie within the guaranteed radius
    (``k > 0``) or the guaranteed radius reaches ``radius`` (``k == 0``). Returns ``(held, bound)``: the first
    ``held`` entries of ``found_*`` (possibly grown, returned too) and the distance up to which they are
    complete, with the work it took. ``held`` is -1 when the probes would cost more than a scan (a query far
    from every code, a radius or k that takes in most of them): the caller scans for that query instead."""
    m = starts.shape[0]
    bits = 8 * codes.shape[1]
    keys = np.empty(m, np.uint64)
    for j in range(m):
        keys[j] = substring(query_bytes, q, starts[j], lengths[j])
    per_distance = np.zeros(bits + 1, np.int64)
    positions = np.empty(32, np.int64)
    held = 0
    work = 0  # buckets probed and rows read: the search's cost, which the build compares plans by
    # Codes farther than this are passed over: the radius, or the k-th smallest distance found so far (a code
    # farther than k found ones is no answer, and the bound only falls).
    bound = radius if k == 0 else bits
    limit = max(SCAN_WORK, count // 16)  # reads beyond this cost more than reading every code in order
    longest = lengths.max()
    for r in range(longest + 1):
        for j in range(m):
            guaranteed = m * r + j
            if r <= lengths[j]:
                if work + _binomial(lengths[j], r) > limit:
                    return -1, 0, found_distance, found_row, work + count
                for i in range(r):
                    positions[i] = i
                more = True
                while more:
                    key = keys[j]
                    for i in range(r):
                        key ^= np.uint64(1) << np.uint64(positions[i])
                    bucket = bases[j] + (key & ((np.uint64(1) << np.uint64(directs[j])) - np.uint64(1)))
                    low, high = _key_range(codes, rows[j], offsets[bucket], offsets[bucket + 1], starts[j],
                                           lengths[j], directs[j], key)
                    work += 1 + high - low
                    held, bound, found_distance, found_row = _read_bucket(
                        codes, words, query_words, q, rows[j], low, high, count, starts, lengths, keys, j, r, key, k,
                        bound, held, found_distance, found_row, per_distance)
                    more = r > 0 and _next_combination(positions, r, lengths[j])
            if k > 0:
                within = 0
                for d in range(min(guaranteed, bits) + 1):
                    within += per_distance[d]
                if within >= k:
                    return held, guaranteed, found_distance, found_row, work
            elif guaranteed >= radius:
                return held, guaranteed, found_distance, found_row, work
    return held, bits, found_distance, found_row, work


@njit(nogil=True, boundscheck=False, cache=True)
def _ordered(found_distance, found_row, held, bound):
    """The found entries within ``bound``, ordered by (distance, row)."""
    keep = found_distance[:held] <= bound
    distance, row = found_distance[:held][keep], found_row[:held][keep]
    order = np.argsort(distance.astype(np.int64) * (np.int64(1) << 40) + row)
    return distance[order], row[order]


@njit(nogil=True, boundscheck=False, cache=True)
def knn(query_bytes, query_words, codes, words, starts, lengths, directs, bases, offsets, rows, count, k, out_distances,
        out_rows, scan, start, stop):
    """Rows ``start:stop`` of ``out_distances`` / ``out_rows`` ``[nq, k]``: the k nearest of the ``count``
    tabled rows (``k <= count``), ascending distance, ties by row; ``scan[q]`` set instead for a query the
    tables would answer more slowly than a scan. Releases the GIL."""
    found_distance = np.empty(1024, np.int32)
    found_row = np.empty(1024, np.int64)
    for q in range(start, stop):
        held, bound, found_distance, found_row, _ = _search_one(
            query_bytes, query_words, q, codes, words, starts, lengths, directs, bases, offsets, rows, count, 0, k,
            found_distance, found_row)
        if held < 0:
            scan[q] = True
            continue
        distance, row = _ordered(found_distance, found_row, held, bound)
        out_distances[q, :] = distance[:k]
        out_rows[q, :] = row[:k]


@njit(nogil=True, boundscheck=False, cache=True)
def work(query_bytes, query_words, codes, words, starts, lengths, directs, bases, offsets, rows, count, k, budget):
    """Buckets probed plus rows read by k-NN searches of every query: what one plan of substrings costs (counted
    until it passes ``budget``)."""
    found_distance = np.empty(1024, np.int32)
    found_row = np.empty(1024, np.int64)
    total = 0
    for q in range(query_bytes.shape[0]):
        _, _, found_distance, found_row, spent = _search_one(
            query_bytes, query_words, q, codes, words, starts, lengths, directs, bases, offsets, rows, count, 0, k,
            found_distance, found_row)
        total += spent
        if total > budget:
            break
    return total


@njit(nogil=True, boundscheck=False, cache=True)
def within_radius(query_bytes, query_words, codes, words, starts, lengths, directs, bases, offsets, rows, count, radius,
                  scan, start, stop):
    """Every tabled row within ``radius`` of queries ``start:stop``: ``(counts, distances, rows)``, each
    query's hits in turn by (distance, row); none, and ``scan[q]`` set, for a query the tables would answer more
    slowly than a scan. Releases the GIL."""
    counts = np.zeros(stop - start, np.int64)
    out_distance = np.empty(1024, np.int32)
    out_row = np.empty(1024, np.int64)
    found_distance = np.empty(1024, np.int32)
    found_row = np.empty(1024, np.int64)
    written = 0
    for q in range(start, stop):
        held, _, found_distance, found_row, _ = _search_one(
            query_bytes, query_words, q, codes, words, starts, lengths, directs, bases, offsets, rows, count, radius, 0,
            found_distance, found_row)
        if held < 0:
            scan[q] = True
            continue
        distance, row = _ordered(found_distance, found_row, held, radius)
        n = distance.shape[0]
        if written + n > out_distance.shape[0]:
            out_distance = _grown(out_distance, written + n)
            out_row = _grown(out_row, written + n)
        out_distance[written:written + n] = distance
        out_row[written:written + n] = row
        counts[q - start] = n
        written += n
    return counts, out_distance[:written], out_row[:written]
