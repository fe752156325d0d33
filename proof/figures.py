"""Repeated measurements summed up the same way everywhere: median, min and max."""

import statistics
from typing import Any


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank; unsorted is fine)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _is_figure(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarize(values: list[Any]) -> Any:
    """Median, min and max of the numbers found at the same place in each of ``values``.

    Dicts are walked key by key (a key some of them lack counts 0 there: a kind of WAL record
    one batch wrote and another did not); anything that is not a number is kept from the
    first value (sizes given as text, statuses, settings). None for no values at all.
    """
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(key for value in values for key in value)
        return {key: summarize([value.get(key, 0) for value in values]) for key in keys}
    if all(_is_figure(value) for value in values):
        return {
            key: round(figure, 3) if isinstance(figure, float) else figure
            for key, figure in (
                ("median", statistics.median(values)),
                ("min", min(values)),
                ("max", max(values)),
            )
        }
    return first
