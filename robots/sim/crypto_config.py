"""Settings of the crypto simulated venue (`robots.sim.crypto`): frozen, keyword-only, exact fee rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from fractions import Fraction
from typing import Any

from robots.positions import parse_rate
from ticktape.errors import ValidationError

QUEUE_MODELS = ("conservative", "pro_rata")


@dataclass(frozen=True, kw_only=True)
class CryptoVenueConfig:
    """Latencies (ns, per intent kind), fee rates (fractions of notional) and the queue model."""

    place_latency_ns: int = 0
    cancel_latency_ns: int = 0
    replace_latency_ns: int = 0
    maker_fee: Fraction | Decimal | str | float = Fraction(1, 1000)
    taker_fee: Fraction | Decimal | str | float = Fraction(1, 1000)
    queue_model: str = "conservative"
    trade_fallback: bool = True
    """With no book or quote, market orders take up to the last trade's size at its price."""
    unlimited_trade_fallback: bool = False
    """Optimistic, off by default: with no book or quote, fill market orders *in full* at the last
    trade price (what tick/bar backtesters commonly assume). It breaks the rule that nothing fills
    beyond what the recorded market traded, so runs that use it say so in their manifest."""
    order_id_prefix: str = "sim"

    def __post_init__(self) -> None:
        for name in ("maker_fee", "taker_fee"):
            try:
                object.__setattr__(self, name, parse_rate(getattr(self, name)))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise ValidationError(f"not a fee rate: {getattr(self, name)!r}", field=name) from exc
        for name in ("place_latency_ns", "cancel_latency_ns", "replace_latency_ns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"must be a non-negative integer of ns, got {value!r}", field=name)
        if self.queue_model not in QUEUE_MODELS:
            raise ValidationError(f"must be one of {', '.join(QUEUE_MODELS)}, got {self.queue_model!r}",
                                  field="queue_model")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, where: str = "[venue]") -> CryptoVenueConfig:
        """Build from a dict / TOML table; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValidationError(f"unknown venue setting(s) {unknown} (known: {', '.join(sorted(known))})",
                                  where=where)
        try:
            return cls(**table)
        except ValidationError as exc:
            raise ValidationError(str(exc), where=where, field=exc.field) from exc
        except (ValueError, ArithmeticError, TypeError) as exc:
            raise ValidationError(f"bad value: {exc}", where=where) from exc

    @property
    def maker_rate(self) -> Fraction:
        """The maker fee rate as an exact Fraction."""
        return self.maker_fee  # type: ignore[return-value]  # normalised in __post_init__

    @property
    def taker_rate(self) -> Fraction:
        """The taker fee rate as an exact Fraction."""
        return self.taker_fee  # type: ignore[return-value]
