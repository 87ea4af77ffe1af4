"""Reward trends over the whole scores store: mean reward per day, per dimension and per critic.

``store_trend`` reads them from the store's Delta table (at its latest version, or any version still
kept: the trend as it was then).

The day of a score is the day its video was generated (the file's modification time), falling back
to the day it was scored, so a regression in new generations shows up on the day it was produced.
Scores of different critics are never averaged together: each critic is its own line.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core.config import DIMENSIONS

TREND_COLUMNS: tuple[str, ...] = (*(f"reward_{d}" for d in DIMENSIONS), "reward", "reward_lift")
PANELS: tuple[tuple[str, str], ...] = (*((f"reward_{d}", d) for d in DIMENSIONS), ("reward", "overall"))


def reward_stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "p50": None, "max": None}
    return {"n": int(v.size), "mean": round(float(v.mean()), 6), "std": round(float(v.std()), 6),
            "min": round(float(v.min()), 6), "p50": round(float(np.median(v)), 6), "max": round(float(v.max()), 6)}


def batch_stats(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One stats row per dimension (semantic, fidelity, motion, overall, lift) of a batch of score rows."""
    names = {**{f"reward_{d}": d for d in DIMENSIONS}, "reward": "overall", "reward_lift": "lift"}
    return [{"dimension": names[c], **reward_stats([r.get(c) for r in rows])} for c in TREND_COLUMNS]


def daily_trend(scores: pa.Table) -> list[dict[str, Any]]:
    """Rows ``{critic_id, day, n, <column>: mean}`` sorted by critic and day."""
    if scores.num_rows == 0:
        return []
    gen = scores.column("generated_at").to_pylist() if "generated_at" in scores.column_names else [None] * scores.num_rows
    scored = scores.column("scored_at").to_pylist()
    critics = scores.column("critic_id").to_pylist()
    cols = {c: scores.column(c).to_pylist() for c in TREND_COLUMNS}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (g, s, cid) in enumerate(zip(gen, scored, critics)):
        when = g or s
        groups[(cid, when.date().isoformat())].append(i)
    out = []
    for (cid, day), idx in sorted(groups.items()):
        row: dict[str, Any] = {"critic_id": cid, "day": day, "n": len(idx)}
        for c, vals in cols.items():
            row[c] = reward_stats([vals[i] for i in idx])["mean"]
        out.append(row)
    return out


def store_trend(store: Any, version: int | None = None) -> list[dict[str, Any]]:
    """``daily_trend`` of a ``ScoresStore``'s scores table at ``version`` (default: the latest)."""
    return daily_trend(store.read_scores(["critic_id", "scored_at", "generated_at", *TREND_COLUMNS], version=version))


def plot_trend(
    trend: Sequence[dict[str, Any]], current_critic: str | None = None, threshold: float | None = None,
    version: int | None = None,
) -> bytes:
    """PNG bytes: one panel per dimension plus overall, one line per critic (the current one bold).

    ``version``: the scores table's version the trend was read at, named in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from datetime import date

    by_critic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in trend:
        by_critic[row["critic_id"]].append(row)
    # At most 8 labelled days (matplotlib's automatic date ticks on one day mean hundreds of hourly ticks).
    all_days = sorted({date.fromisoformat(r["day"]) for r in trend})
    ticks = all_days[:: max(1, -(-len(all_days) // 8))]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, dpi=80)
    for ax, (col, title) in zip(axes.flat, PANELS):
        for cid, rows in sorted(by_critic.items(), key=lambda kv: kv[0] == current_critic):
            days = [date.fromisoformat(r["day"]) for r in rows]
            vals = [np.nan if r[col] is None else r[col] for r in rows]
            bold = cid == current_critic
            ax.plot(days, vals, marker="o", linewidth=2.2 if bold else 1.0, alpha=1.0 if bold else 0.55,
                    label=f"{cid[:10]}{' (current)' if bold else ''}")
        if threshold is not None and col == "reward":
            ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"alert < {threshold:g}")
        ax.set_title(f"mean reward: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    axes.flat[0].legend(fontsize=7, loc="best")
    if threshold is not None:
        axes.flat[3].legend(fontsize=7, loc="best")
    n = sum(r["n"] for r in trend)
    at = f" (table version {version})" if version is not None else ""
    fig.suptitle(f"Scores store{at}: {n} scores, {len(by_critic)} critic(s), by generation day", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.1, hspace=0.35, wspace=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
