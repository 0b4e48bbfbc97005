"""The largest arrival rate at which a share of the requests meets an SLO (`simulate
--sweep-rate`): a summary at each rate asked, then the bracket around the largest one that
meets it narrowed in rounds, each trying two rates that cut it in three, until it is within
0.5% of the rate (a finer answer than a simulation of a thousand requests can tell; at most 7
rounds: 3^-7 of the bracket). The rates of a round are independent simulations, run together
on the executor; the rounds, and so the answer, are the same whatever runs them.

What a worker gets is a plain record (serving.iteration.cost_record, the KV pool, the scheduler,
the SLO and the stream's arrays); it answers with the run's Summary.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .requests import Stream
from .simulate import Summary, server_of, simulate, summarise

ROUNDS = 7
POINTS = 2   # rates tried per round
RESOLUTION = 0.005   # the bracket's width, relative to its lower end, that ends the narrowing


def largest_rate(simulate_many: Callable[[list[float]], list[Summary]],
                 rates: Sequence[float], attainment: float
                 ) -> tuple[list[tuple[float, Summary]], float | None]:
    """Summaries at `rates` (rising), and the largest rate at which a share `attainment` of
    the requests meets the SLO, narrowed between the rates that bracket it (None: none does;
    the largest rate asked when it still does)."""
    rates = sorted(float(r) for r in rates)
    rows = list(zip(rates, simulate_many(rates)))
    good = [r for r, s in rows if s.slo_attainment >= attainment]
    if not good:
        return rows, None
    low = max(good)
    above = [r for r, _ in rows if r > low]
    if not above:
        return rows, low
    high = min(above)
    for _ in range(ROUNDS):
        if high - low <= RESOLUTION * low:
            break
        points = [low + (high - low) * k / (POINTS + 1) for k in range(1, POINTS + 1)]
        for rate, summary in zip(points, simulate_many(points)):
            if summary.slo_attainment < attainment:
                high = rate
                break
            low = rate
    return rows, low


def simulate_record(record: dict) -> Summary:
    """One simulation from its plain record (what `--sweep-rate` sends a worker)."""
    stream = Stream(np.asarray(record["arrival"], dtype=float),
                    np.asarray(record["prompt"], dtype=np.int64),
                    np.asarray(record["output"], dtype=np.int64), "sweep")
    trace = simulate(stream, *server_of(record))
    return summarise(trace, record["slo"])
