"""Checking our numbers against published ones at the precision they were printed with."""


def printed(value: float, published: str) -> None:
    """Assert ``value`` rounds to the published number at its printed precision."""
    decimals = len(published.split(".")[1]) if "." in published else 0
    tol = 0.5 * 10.0**-decimals + 1e-12
    assert abs(value - float(published)) <= tol, f"{value!r} != published {published}"
