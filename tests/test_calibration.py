"""Calibration against the seed audit: the ten scored iterations, replicated, land in the
audit's buckets, and the code-diff scores rank like the audit's (Spearman >= 0.8)."""

from __future__ import annotations

from monitor.config import Settings
from monitor.scorer import Scorer
from monitor.scores import bucket_of
from scorer_streams import alerts, finals, run
from seed_replica import AUDIT, seed_stream


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson correlation of the ranks (correct with ties)."""
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def test_spearman_of_known_orders() -> None:
    assert round(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 6) == 1.0
    assert round(spearman([1, 2, 3, 4], [40, 30, 20, 10]), 6) == -1.0
    assert ranks([0, 0, 2]) == [1.5, 1.5, 3.0]


def test_the_seed_replica_lands_in_the_audits_buckets_and_ranks_code_diff_alike() -> None:
    settings = Settings()
    out = run(Scorer(settings), seed_stream().envelopes)
    mine = {p.number: p for p in finals(out).values()}
    assert sorted(mine) == sorted(AUDIT)

    lines = [
        "iter | audit: summ code sem agg bucket | loopmon: summ code sem agg bucket | override",
    ]
    for n in sorted(AUDIT):
        a, m = AUDIT[n], mine[n]
        lines.append(
            f"{n:>4} | {a[0]:>5} {a[1]:>4} {a[2]:>3} {a[3]:>3} {bucket_of(a[3], settings):<6} |"
            f" {m.summary:>5} {m.code_diff:>4} {m.semantic:>3} {m.aggregate:>3} {m.bucket:<6} | {m.override or ''}"
        )
    rho = spearman([AUDIT[n][1] for n in sorted(AUDIT)], [mine[n].code_diff for n in sorted(AUDIT)])
    lines.append(f"code-diff rank correlation (Spearman): {rho:.3f}")
    print("\n" + "\n".join(lines))

    for n in sorted(AUDIT):
        assert mine[n].bucket == bucket_of(AUDIT[n][3], settings), f"iteration {n}: {mine[n].reasons}"
    assert rho >= 0.8
    # The audit's two overrides, by rule: 302 planning only (cap), 310 lost to a rebase (5).
    assert (mine[302].override, mine[302].aggregate) == ("no_code_cap", 10)
    assert (mine[310].override, mine[310].aggregate) == ("git_failure", 5)
    assert [a.detail["state"] for a in alerts(out, "git_state")] == ["rebase-merge"]


def test_the_audits_reading_of_each_turn_shows_in_the_reasons() -> None:
    out = run(Scorer(Settings()), seed_stream().envelopes)
    mine = {p.number: p for p in finals(out).values()}

    def texts(n: int) -> str:
        return "\n".join(r.text for r in mine[n].reasons)

    assert "flag exposed without execution wiring: backend" in texts(307)
    assert "failures reported: 1" in texts(308)
    assert "3 of 3 new flags/fields also consumed" in texts(309)
    assert "production lines" in texts(305) and "no changed test exercises" in texts(305)
    assert "no production or test path changed" in texts(302)
