"""Named splits (train / validation / test) of a store, reproducible from a seed.

The labelled rows are ordered by sha256(seed, uid) — a permutation that depends only on the
seed and on which structures are in the store, not on the order they were labelled in — and cut
by the fractions (rounded, the last split takes the remainder). The split is written into each
row (key ``split``) and the seed and fractions into the store's metadata.
"""

from __future__ import annotations

import hashlib

from distill.store import select_labelled

DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def split_order(uids: list[str], seed: int) -> list[str]:
    """`uids` in the seeded order used to cut the splits."""
    return sorted(uids, key=lambda uid: hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest())


def assign_splits(
    db, fractions: dict[str, float] | None = None, seed: int = 0, teacher_id: str | None = None
) -> dict[str, int]:
    """Write a `split` key into every successfully labelled row; return the count per split."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be non-negative with a positive sum: {fractions}")
    total = sum(fractions.values())
    rows = {row.uid: row.id for row in select_labelled(db, teacher_id)}
    order = split_order(list(rows), seed)
    counts, start, acc = {}, 0, 0.0
    names = list(fractions)
    with db:
        for i, name in enumerate(names):
            acc += fractions[name] / total
            stop = len(order) if i == len(names) - 1 else round(acc * len(order))
            for uid in order[start:stop]:
                db.update(rows[uid], split=name)
            counts[name], start = stop - start, stop
    db.metadata = {
        **db.metadata,
        "splits": {"seed": seed, "fractions": fractions, "teacher": teacher_id, "counts": counts},
    }
    return counts


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.8,validation=0.1,test=0.1"`` (or ``"0.8,0.1,0.1"``) to a dict."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            return {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
        values = [float(p) for p in parts]
    except ValueError:
        msg = f"bad split fractions {text!r}: expected train=0.8,validation=0.1,..."
        raise ValueError(msg) from None
    if len(values) != 3:
        raise ValueError(f"bad split fractions {text!r}: give three numbers or name=value pairs")
    return dict(zip(DEFAULT_FRACTIONS, values, strict=True))
