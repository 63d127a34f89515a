"""Paper-style evaluation reports: the metrics hashing papers print, for any encoder, beside the baselines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _validation, baselines, metrics

if TYPE_CHECKING:
    from tfhash.datasets import RetrievalSplit


def evaluate_codes(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                   database_labels: ArrayLike, *, bits: int, top_k: int = 1000,
                   radius: int = 2, pr_curve: bool = False) -> dict:
    """The retrieval figures of HashGAN Tables 1-2: mAP, mAP@top_k, precision@top_k, precision within
    ``radius`` (and how many balls were empty), each named exactly. With ``pr_curve``, also
    ``"pr_curve": {"radius", "precision", "recall"}`` (lists over Hamming radius 0..bits).
    """
    _validation.check_codes(query_codes, "query_codes", bits=bits)
    _validation.check_codes(database_codes, "database_codes", bits=bits)
    args = (query_codes, database_codes, query_labels, database_labels)
    ball = metrics.precision_within_radius(*args, radius=radius)
    row = {
        "mAP": metrics.mean_average_precision(*args),
        f"mAP@{top_k}": metrics.mean_average_precision(*args, top_k=top_k),
        f"precision@{top_k}": metrics.precision_at_k(*args, top_k),
        f"precision@r{radius}": ball.precision,
        f"empty_balls@r{radius}": ball.empty_queries,
    }
    if pr_curve:
        curve = metrics.precision_recall_curve(*args)
        row["pr_curve"] = {"radius": curve.radius.tolist(), "precision": curve.precision.tolist(),
                           "recall": curve.recall.tolist()}
    return row


def compare_baselines(split: RetrievalSplit, bits: int, *,
                      names: Sequence[str] = ("lsh", "pcah", "itq", "sph", "sh"), seed: int = 0, top_k: int = 1000,
                      radius: int = 2, pr_curve: bool = False, log: Callable[[str], None] | None = print) -> list:
    """Fits each baseline on ``split``'s training part and evaluates it; returns one row per method.

    Baselines whose assumptions the data break (e.g. PCAH with more bits than features) are reported
    with the reason instead of failing the whole comparison.
    """
    rows = []
    for name in names:
        start = time.perf_counter()
        method = baselines.get(name)(bits=bits, seed=seed)
        try:
            method.fit(split.train_x)
        except ValueError as err:
            if log:
                log(f"  {name}: skipped ({err})")
            rows.append({"method": name, "bits": bits, "skipped": str(err)})
            continue
        row = {"method": name, "bits": bits}
        row.update(evaluate_codes(method.encode(split.query_x), method.encode(split.database_x),
                                  split.query_y, split.database_y, bits=bits, top_k=top_k, radius=radius,
                                  pr_curve=pr_curve))
        row["seconds"] = time.perf_counter() - start
        if log:
            log(f"  {name} {bits} bits: mAP {row['mAP']:.4f} ({row['seconds']:.1f} s)")
        rows.append(row)
    return rows


PROTOCOLS = ("labels", "euclidean")


class SplitScorer:
    """The figure settings are chosen by, for codes of one split's queries and database.

    ``protocol="labels"``: an item is relevant to a query of the same class; mAP over the whole database.
    ``"euclidean"`` (for data without labels): the query's true top-N Euclidean neighbours are relevant (N = 1,000,
    or a tenth of the database when it holds fewer than 5,000 items); mAP. The ground truth is computed once, here.
    Score ``split.validation()`` to choose settings and ``split`` itself to report the chosen one.
    """

    def __init__(self, split: RetrievalSplit, protocol: str = "labels") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}.")
        self.split, self.protocol, self.truth = split, protocol, None
        if protocol == "euclidean":
            database = split.database_x.reshape(len(split.database_x), -1)
            n = 1000 if len(database) >= 5000 else max(1, len(database) // 10)
            self.truth = metrics.euclidean_ground_truth(split.query_x.reshape(len(split.query_x), -1), database, n)

    def __call__(self, encode: Callable[[np.ndarray], np.ndarray], *, bits: int | None = None) -> Any:
        """mAP of ``encode``'s codes; with ``bits``, ``(mAP, details)``: the other figures the papers print
        (labels: mAP@1000, precision@1000 and @100, NMI and accuracy of k-means on the database codes;
        euclidean: precision@100)."""
        query, database = encode(self.split.query_x), encode(self.split.database_x)
        if self.protocol == "euclidean":
            figure = metrics.ann_mean_average_precision(query, database, self.truth)
            if bits is None:
                return figure
            return figure, {"precision@100": metrics.ann_precision_at_k(query, database, self.truth, 100)}
        labelled = (query, database, self.split.query_y, self.split.database_y)
        figure = metrics.mean_average_precision(*labelled)
        if bits is None:
            return figure
        details = {"mAP@1000": metrics.mean_average_precision(*labelled, top_k=1000),
                   "precision@1000": metrics.precision_at_k(*labelled, 1000),
                   "precision@100": metrics.precision_at_k(*labelled, 100)}
        if np.ndim(self.split.database_y) == 1:
            clusters = metrics.kmeans_scores(database, self.split.database_y, bits=bits, seed=0)
            details.update({"kmeans_nmi": clusters["nmi"], "kmeans_acc": clusters["acc"]})
        return figure, details


def markdown_table(rows: list, columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (dicts); floats with 4 decimals, missing cells as '-'."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def json_line(payload: Any) -> str:
    """One line of JSON (numpy scalars converted), for scripts that end with their figures."""
    def convert(value):
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(type(value).__name__)

    return json.dumps(payload, default=convert, sort_keys=True)
