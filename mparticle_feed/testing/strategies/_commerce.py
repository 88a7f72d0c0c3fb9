"""Strategies for commerce (models stage): products, product and promotion actions,
impressions, carts and commerce events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hypothesis import strategies as st

from ..._wire.commerce import (
    Product,
    ProductAction,
    ProductImpression,
    Promotion,
    PromotionAction,
    ShoppingCart,
)
from ..._wire.enums import CommerceEventType, ProductActionType, PromotionActionType
from ..._wire.models import CommerceEvent
from ._objects import _common
from ._values import (
    _MAX_ITEMS,
    _int32,
    _maybe,
    _string_maps,
    _text,
    _values,
    custom_attribute_maps,
    money,
    timestamps,
)


def products() -> st.SearchStrategy[Product]:
    """Products with Decimal prices, quantities and totals."""
    return st.builds(
        Product,
        id=_maybe(_text),
        name=_maybe(_text),
        brand=_maybe(_text),
        category=_maybe(_text),
        variant=_maybe(_text),
        position=_maybe(_int32),
        price=_maybe(money(min_value=0)),
        quantity=_maybe(money(min_value=0, max_value=100_000, max_places=2)),
        coupon_code=_maybe(_text),
        added_to_cart_time_ms=_maybe(timestamps()),
        total_product_amount=_maybe(money(min_value=0)),
        custom_attributes=_maybe(_string_maps()),
    )


def _product_lists(min_size: int = 0) -> st.SearchStrategy[list[Product]]:
    return st.lists(products(), min_size=min_size, max_size=_MAX_ITEMS)


def product_actions(
    *, actions: Sequence[ProductActionType] | None = None
) -> st.SearchStrategy[ProductAction]:
    """Product actions (purchase, refund, ...); ``actions`` limits the action types."""
    return st.builds(
        ProductAction,
        action=_values(list(ProductActionType) if actions is None else list(actions)),
        checkout_step=_maybe(st.integers(0, 100)),
        checkout_options=_maybe(_text),
        product_action_list=_maybe(_text),
        product_list_source=_maybe(_text),
        transaction_id=_maybe(_text),
        affiliation=_maybe(_text),
        total_amount=_maybe(money()),
        tax_amount=_maybe(money()),
        shipping_amount=_maybe(money()),
        coupon_code=_maybe(_text),
        products=_maybe(_product_lists()),
    )


def promotions() -> st.SearchStrategy[Promotion]:
    """Internal promotions (id, name, creative, position)."""
    return st.builds(
        Promotion,
        id=_maybe(_text),
        name=_maybe(_text),
        creative=_maybe(_text),
        position=_maybe(_text),
    )


def promotion_actions() -> st.SearchStrategy[PromotionAction]:
    """A view or a click of some promotions."""
    return st.builds(
        PromotionAction,
        action=_values(list(PromotionActionType)),
        promotions=_maybe(st.lists(promotions(), max_size=_MAX_ITEMS)),
    )


def product_impressions() -> st.SearchStrategy[ProductImpression]:
    """Products seen in one named list."""
    return st.builds(ProductImpression, product_impression_list=_text, products=_product_lists())


def shopping_carts() -> st.SearchStrategy[ShoppingCart]:
    """The cart's products."""
    return st.builds(ShoppingCart, products=_product_lists())


def commerce_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[CommerceEvent]:
    """Commerce events, each with exactly one of a product action, a promotion action or
    product impressions."""
    common = _common(with_timestamp, min_timestamp, max_timestamp)
    extra = {
        "shopping_cart": _maybe(shopping_carts()),
        "currency_code": _maybe(st.sampled_from(["USD", "EUR", "GBP", "JPY", "AUD"])),
        "screen_name": _maybe(_text),
        "is_non_interactive": _maybe(st.booleans()),
        "event_name": _maybe(_text),
        "custom_event_type": _maybe(_values(list(CommerceEventType))),
        "custom_flags": _maybe(custom_attribute_maps()),
    }
    return st.one_of(
        st.builds(CommerceEvent, product_action=product_actions(), **common, **extra),
        st.builds(CommerceEvent, promotion_action=promotion_actions(), **common, **extra),
        st.builds(
            CommerceEvent,
            product_impressions=st.lists(product_impressions(), min_size=1, max_size=2),
            **common,
            **extra,
        ),
    )
