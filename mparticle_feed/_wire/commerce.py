"""Commerce objects: products, product actions, promotions, impressions, shopping carts."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import attrs

from .enums import ProductActionType, PromotionActionType
from .sparse import passes_through, sparse_model
from .values import (
    enum_value,
    model_tuple,
    optional_decimal,
    optional_string_map,
    optional_timestamp_ms,
)

__all__ = [
    "Product",
    "ProductAction",
    "ProductImpression",
    "Promotion",
    "PromotionAction",
    "ShoppingCart",
]


def _product_action_type(value: ProductActionType | str) -> ProductActionType:
    return enum_value(ProductActionType, value)


passes_through(ProductActionType, _product_action_type)


def _promotion_action_type(value: PromotionActionType | str) -> PromotionActionType:
    return enum_value(PromotionActionType, value)


passes_through(PromotionActionType, _promotion_action_type)


@sparse_model(kw_only=True, slots=False)
class Product:
    """A product. Money and quantities are Decimal; ints and floats are accepted."""

    id: str | None = None
    name: str | None = None
    brand: str | None = None
    category: str | None = None
    variant: str | None = None
    position: int | None = None
    price: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    quantity: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    coupon_code: str | None = None
    added_to_cart_time_ms: int | None = attrs.field(default=None, converter=optional_timestamp_ms)
    total_product_amount: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    custom_attributes: dict[str, str] | None = attrs.field(
        default=None, converter=optional_string_map
    )


def _products(value: Iterable[Product] | None) -> tuple[Product, ...] | None:
    return None if value is None else model_tuple(Product, value)


def _products_required(value: Iterable[Product]) -> tuple[Product, ...]:
    return model_tuple(Product, value)


@sparse_model(kw_only=True, slots=False)
class ProductAction:
    """A product-based commerce event's action: purchase, add_to_cart, refund, ..."""

    action: ProductActionType = attrs.field(converter=_product_action_type)
    checkout_step: int | None = None
    checkout_options: str | None = None
    product_action_list: str | None = None
    product_list_source: str | None = None
    transaction_id: str | None = None
    affiliation: str | None = None
    total_amount: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    tax_amount: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    shipping_amount: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    coupon_code: str | None = None
    products: tuple[Product, ...] | None = attrs.field(default=None, converter=_products)


@sparse_model(kw_only=True, slots=False)
class Promotion:
    """An internal promotion (a banner, a campaign slot)."""

    id: str | None = None
    name: str | None = None
    creative: str | None = None
    position: str | None = None


def _promotions(value: Iterable[Promotion] | None) -> tuple[Promotion, ...] | None:
    return None if value is None else model_tuple(Promotion, value)


@sparse_model(kw_only=True, slots=False)
class PromotionAction:
    """A promotion-based commerce event's action: a view or a click of promotions."""

    action: PromotionActionType = attrs.field(converter=_promotion_action_type)
    promotions: tuple[Promotion, ...] | None = attrs.field(default=None, converter=_promotions)


@sparse_model(kw_only=True, slots=False)
class ProductImpression:
    """Products seen in one list (``product_impression_list``)."""

    product_impression_list: str
    products: tuple[Product, ...] = attrs.field(converter=_products_required)


@sparse_model(kw_only=True, slots=False)
class ShoppingCart:
    """The cart's content when the commerce event happened."""

    products: tuple[Product, ...] = attrs.field(converter=_products_required)
