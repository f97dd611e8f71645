"""Numbers as people read them in messages and summaries."""

from __future__ import annotations

__all__ = ["fmt_bytes", "fmt_shape"]


def fmt_bytes(n) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, one decimal)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def fmt_shape(shape) -> str:
    """``(1000000, 32)`` -> ``"1,000,000 x 32"``."""
    return " x ".join(f"{int(s):,}" for s in shape)
