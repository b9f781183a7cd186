"""A small model catalogue shared by the LLM executors: context windows and prices.

Prices are USD per million tokens, as the providers publish them. Each executor owns
its provider's rows; the Anthropic rows live here, other executors add theirs with
`register_models()` at import time (or keep their own `ModelCatalog`).

    from coro.executors.pricing import CatalogModel, Pricing, register_models

    register_models(
        CatalogModel("openai", "gpt-x", "GPT X", 400_000, Pricing(1.25, 10.0, cache_read=0.125))
    )
    cost = cost_usd("openai", "gpt-x-2026-01-01", input_tokens=1000, output_tokens=20)

A model id resolves to a catalogued id exactly, or through a dated snapshot suffix
(`claude-haiku-4-5-20251001` → `claude-haiku-4-5`, `gpt-x-2026-01-01` → `gpt-x`). An
unknown model costs 0 (the tokens are still recorded): a price is never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from coro.executors.base import ModelInfo

Tier = Literal["planning", "coding", "mini"]

#: `-20251001`, `-2025-10-01` or `-latest` at the end of a model id.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens. Cache rates default to the input rate when not published."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
    ) -> float:
        """Cost in USD. `input_tokens` are the uncached input tokens (as Anthropic and
        the usage events report them)."""
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_input_tokens * cache_read
            + cache_creation_input_tokens * cache_write
        )
        return total / 1_000_000

    def as_dict(self) -> dict[str, float]:
        """The `pricing` of `GET /plugins/:id/models`."""
        out = {"inputPerMTokens": self.input, "outputPerMTokens": self.output}
        if self.cache_read is not None:
            out["cacheReadPerMTokens"] = self.cache_read
        if self.cache_write is not None:
            out["cacheCreationPerMTokens"] = self.cache_write
        return out


@dataclass(frozen=True)
class CatalogModel:
    provider: str
    id: str
    display_name: str
    context_window: int | None = None
    pricing: Pricing | None = None
    tier: Tier | None = None
    is_default: bool = False  # the default model of its tier for this provider

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.id,
            display_name=self.display_name,
            context_window=self.context_window,
            pricing=self.pricing.as_dict() if self.pricing else None,
        )


class ModelCatalog:
    """Models by (provider, id), in registration order."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], CatalogModel] = {}

    def register(self, *models: CatalogModel) -> None:
        """Add or replace rows (a later registration of the same id wins)."""
        for model in models:
            self._models[(model.provider, model.id)] = model

    def lookup(self, provider: str, model_id: str) -> CatalogModel | None:
        """The catalogued model for an id, exact or via a dated-snapshot suffix."""
        found = self._models.get((provider, model_id))
        if found is None:
            base = _SNAPSHOT_SUFFIX.sub("", model_id)
            found = self._models.get((provider, base)) if base != model_id else None
        return found

    def models(self, provider: str) -> list[CatalogModel]:
        return [m for (p, _), m in self._models.items() if p == provider]

    def cost_usd(
        self,
        provider: str,
        model_id: str | None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
    ) -> float:
        """The cost of some usage, or 0.0 for a model without a price row."""
        model = self.lookup(provider, model_id) if model_id else None
        if model is None or model.pricing is None:
            return 0.0
        return model.pricing.cost(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=cache_read_input_tokens,
            cache_creation_input_tokens=cache_creation_input_tokens,
        )

    def default_for_tier(self, provider: str, tier: Tier) -> CatalogModel | None:
        """The tier's `is_default` model, else its first model."""
        in_tier = [m for m in self.models(provider) if m.tier == tier]
        return next((m for m in in_tier if m.is_default), in_tier[0] if in_tier else None)


#: The process-wide catalogue every built-in executor prices with.
CATALOG = ModelCatalog()


def register_models(*models: CatalogModel) -> None:
    CATALOG.register(*models)


def lookup(provider: str, model_id: str) -> CatalogModel | None:
    return CATALOG.lookup(provider, model_id)


def models_for(provider: str) -> list[CatalogModel]:
    return CATALOG.models(provider)


def cost_usd(
    provider: str,
    model_id: str | None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> float:
    return CATALOG.cost_usd(
        provider,
        model_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=cache_read_input_tokens,
        cache_creation_input_tokens=cache_creation_input_tokens,
    )


# --- Anthropic ------------------------------------------------------------------------
# platform.claude.com/docs/en/about-claude/pricing, checked 2026-11. cache_write is the
# 5-minute cache-write rate (what `cache_control: {"type": "ephemeral"}` buys).
# Claude Haiku 5.5 is billed in two bands by prompt length; the row holds the band for
# prompts up to 100k tokens.

ANTHROPIC_DEFAULT_MODEL = "claude-sonnet-5-5"

_M, _K200 = 1_000_000, 200_000
_ANTHROPIC_ROWS: list[tuple[str, str, int, float, float, float, float, Tier | None, bool]] = [
    # id, display name, context window, input, output, cache read, cache write, tier, default
    ("claude-sonnet-5-5", "Claude Sonnet 5.5", _M, 2, 10, 0.10, 2.50, "coding", True),
    ("claude-opus-5-5", "Claude Opus 5.5", _M, 4, 20, 0.20, 5.00, "planning", True),
    ("claude-haiku-5-5", "Claude Haiku 5.5", _M, 0.10, 0.50, 0.01, 0.125, "mini", True),
    ("claude-fable-5-1", "Claude Fable 5.1", _M, 10, 50, 0.25, 12.50, None, False),
    ("claude-fable-5", "Claude Fable 5", _M, 10, 50, 1.00, 12.50, None, False),
    ("claude-opus-5", "Claude Opus 5", _M, 5, 25, 0.50, 6.25, "planning", False),
    ("claude-sonnet-5", "Claude Sonnet 5", _M, 2, 10, 0.20, 2.50, "coding", False),
    ("claude-opus-4-8", "Claude Opus 4.8", _M, 5, 25, 0.50, 6.25, "planning", False),
    ("claude-opus-4-7", "Claude Opus 4.7", _M, 5, 25, 0.50, 6.25, "planning", False),
    ("claude-opus-4-6", "Claude Opus 4.6", _M, 5, 25, 0.50, 6.25, "planning", False),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", _M, 3, 15, 0.30, 3.75, "coding", False),
    ("claude-opus-4-5", "Claude Opus 4.5", _K200, 5, 25, 0.50, 6.25, "planning", False),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", _K200, 3, 15, 0.30, 3.75, "coding", False),
    ("claude-haiku-4-5", "Claude Haiku 4.5", _K200, 1, 5, 0.10, 1.25, "mini", False),
]

register_models(
    *(
        CatalogModel(
            provider="anthropic",
            id=model_id,
            display_name=name,
            context_window=context,
            pricing=Pricing(rate_in, rate_out, cache_read=read, cache_write=write),
            tier=tier,
            is_default=dflt,
        )
        for model_id, name, context, rate_in, rate_out, read, write, tier, dflt in _ANTHROPIC_ROWS
    )
)
