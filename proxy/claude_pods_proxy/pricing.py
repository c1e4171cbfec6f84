"""What a reply cost, in US dollars, for budgets (not for invoicing).

The table holds list prices per million tokens (USD, Anthropic's public price list for
the model families known when this was written). Models are matched by the longest
listed prefix of their id, so dated ids (``claude-sonnet-4-5-20250929``) and later
point releases of a family share its price. A model that matches nothing is charged
:data:`UNKNOWN_MODEL_PRICE`, the highest price in the table, so a budget can only run
out early, never late.

Cache traffic is priced separately from plain input, as the API bills it:

* cache writes with the default 5-minute TTL: 1.25 x the input price;
* cache writes with the 1-hour TTL (``usage.cache_creation.ephemeral_1h_input_tokens``):
  2 x the input price;
* cache reads: 0.1 x the input price;
* server-side web searches: $10 per 1,000 requests.

Long context: when a request's input side (plain + cache write + cache read) exceeds
200k tokens, input-side prices are doubled and the output price is multiplied by 1.5 for
every model. The API charges this premium only for some models; applying it to all keeps
the estimate conservative.
"""

from __future__ import annotations

from dataclasses import dataclass

from .usage import Usage

__all__ = ["PRICES", "UNKNOWN_MODEL_PRICE", "Price", "cost_usd", "price_for"]


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


#: Longest matching prefix wins.
PRICES: dict[str, Price] = {
    "claude-opus-4-0": Price(15.0, 75.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4-2025": Price(15.0, 75.0),  # claude-opus-4-20250514 (Opus 4.0)
    "claude-3-opus": Price(15.0, 75.0),
    "claude-opus-": Price(5.0, 25.0),  # Opus 4.5 and later
    "claude-sonnet-": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-haiku-": Price(1.0, 5.0),  # Haiku 4.5 and later
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
}
UNKNOWN_MODEL_PRICE = Price(15.0, 75.0)
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1
WEB_SEARCH_USD = 0.01
LONG_CONTEXT_TOKENS = 200_000
LONG_CONTEXT_INPUT = 2.0
LONG_CONTEXT_OUTPUT = 1.5

_BY_LENGTH = sorted(PRICES.items(), key=lambda item: len(item[0]), reverse=True)


def price_for(model: str | None) -> Price:
    """The table price of *model* (the unknown-model price for ``None`` or no match)."""
    if model:
        for prefix, price in _BY_LENGTH:
            if model.startswith(prefix):
                return price
    return UNKNOWN_MODEL_PRICE


def cost_usd(model: str | None, usage: Usage) -> float:
    """Dollar cost of *usage* on *model* (see the module docstring for the rules)."""
    price = price_for(model)
    write_1h = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    write_5m = usage.cache_creation_input_tokens - write_1h
    input_side = usage.input_tokens + usage.cache_creation_input_tokens
    input_side += usage.cache_read_input_tokens
    in_factor, out_factor = 1.0, 1.0
    if input_side > LONG_CONTEXT_TOKENS:
        in_factor, out_factor = LONG_CONTEXT_INPUT, LONG_CONTEXT_OUTPUT
    input_units = (
        usage.input_tokens
        + write_5m * CACHE_WRITE_5M
        + write_1h * CACHE_WRITE_1H
        + usage.cache_read_input_tokens * CACHE_READ
    )
    dollars = (
        input_units * price.input * in_factor + usage.output_tokens * price.output * out_factor
    ) / 1_000_000
    return dollars + usage.web_search_requests * WEB_SEARCH_USD
