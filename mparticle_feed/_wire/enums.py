"""Wire stage: string enums for every enumeration on the Events API wire.

Where mParticle's sources disagree on a value, docs/models.md says which one is sent and why.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ApplicationOS",
    "ApplicationState",
    "ApplicationTransitionType",
    "AttAuthorizationStatus",
    "CommerceEventType",
    "CustomEventType",
    "DeviceOrientation",
    "DevicePlatform",
    "Environment",
    "EventType",
    "IdentityType",
    "LocationSource",
    "ProductActionType",
    "ProfileEventType",
    "PromotionActionType",
    "PushMessageBehavior",
    "PushMessageType",
    "SystemNotificationType",
]


class _WireEnum(str, Enum):
    """A str enum whose str() is its wire value."""

    def __str__(self) -> str:
        return str(self.value)


class Environment(_WireEnum):
    """Batch environment. We default to development; production must be asked for."""

    PRODUCTION = "production"
    DEVELOPMENT = "development"


class EventType(_WireEnum):
    """The 17 inbound event types (the schema's ``events.items.oneOf``)."""

    CUSTOM_EVENT = "custom_event"
    COMMERCE_EVENT = "commerce_event"
    SCREEN_VIEW = "screen_view"
    SESSION_START = "session_start"
    SESSION_END = "session_end"
    USER_ATTRIBUTE_CHANGE = "user_attribute_change"
    USER_IDENTITY_CHANGE = "user_identity_change"
    OPT_OUT = "opt_out"
    PUSH_REGISTRATION = "push_registration"
    PUSH_MESSAGE = "push_message"
    APPLICATION_STATE_TRANSITION = "application_state_transition"
    BREADCRUMB = "breadcrumb"
    CRASH_REPORT = "crash_report"
    NETWORK_PERFORMANCE = "network_performance"
    FIRST_RUN = "first_run"
    UNINSTALL = "uninstall"
    PROFILE = "profile"


class CustomEventType(_WireEnum):
    """``custom_event_type`` of a custom event.

    ``attribution`` is documented but missing from both JSON Schemas (docs/models.md);
    it is accepted here because mParticle's docs describe attribution events.
    """

    NAVIGATION = "navigation"
    LOCATION = "location"
    SEARCH = "search"
    TRANSACTION = "transaction"
    USER_CONTENT = "user_content"
    USER_PREFERENCE = "user_preference"
    SOCIAL = "social"
    OTHER = "other"
    MEDIA = "media"
    ATTRIBUTION = "attribution"


class CommerceEventType(_WireEnum):
    """The derived ``custom_event_type`` of a commerce event (mParticle normally sets it)."""

    NAVIGATION = "navigation"
    LOCATION = "location"
    SEARCH = "search"
    TRANSACTION = "transaction"
    USER_CONTENT = "user_content"
    USER_PREFERENCE = "user_preference"
    SOCIAL = "social"
    OTHER = "other"
    MEDIA = "media"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT = "checkout"
    CHECKOUT_OPTION = "checkout_option"
    CLICK = "click"
    VIEW_DETAIL = "view_detail"
    PURCHASE = "purchase"
    REFUND = "refund"
    PROMOTION_VIEW = "promotion_view"
    PROMOTION_CLICK = "promotion_click"
    ADD_TO_WISHLIST = "add_to_wishlist"
    REMOVE_FROM_WISHLIST = "remove_from_wishlist"
    IMPRESSION = "impression"
    ATTRIBUTION = "attribution"
    CONSENT_GRANTED = "consent_granted"
    CONSENT_DENIED = "consent_denied"


class ProductActionType(_WireEnum):
    """``product_action.action``. Note the wire spelling ``remove_from_wish_list``."""

    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT = "checkout"
    CHECKOUT_OPTION = "checkout_option"
    CLICK = "click"
    VIEW_DETAIL = "view_detail"
    PURCHASE = "purchase"
    REFUND = "refund"
    ADD_TO_WISHLIST = "add_to_wishlist"
    REMOVE_FROM_WISH_LIST = "remove_from_wish_list"


class PromotionActionType(_WireEnum):
    VIEW = "view"
    CLICK = "click"


class IdentityType(_WireEnum):
    """The 22 user identity keys of ``user_identities``."""

    OTHER = "other"
    CUSTOMER_ID = "customer_id"
    FACEBOOK = "facebook"
    TWITTER = "twitter"
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    YAHOO = "yahoo"
    EMAIL = "email"
    ALIAS = "alias"
    FACEBOOK_CUSTOM_AUDIENCE_ID = "facebook_custom_audience_id"
    OTHER_ID_2 = "other_id_2"
    OTHER_ID_3 = "other_id_3"
    OTHER_ID_4 = "other_id_4"
    OTHER_ID_5 = "other_id_5"
    OTHER_ID_6 = "other_id_6"
    OTHER_ID_7 = "other_id_7"
    OTHER_ID_8 = "other_id_8"
    OTHER_ID_9 = "other_id_9"
    OTHER_ID_10 = "other_id_10"
    MOBILE_NUMBER = "mobile_number"
    PHONE_NUMBER_2 = "phone_number_2"
    PHONE_NUMBER_3 = "phone_number_3"


class ApplicationTransitionType(_WireEnum):
    APPLICATION_INITIALIZED = "application_initialized"
    APPLICATION_EXIT = "application_exit"
    APPLICATION_BACKGROUND = "application_background"
    APPLICATION_FOREGROUND = "application_foreground"


class PushMessageType(_WireEnum):
    SENT = "sent"
    RECEIVED = "received"
    ACTION = "action"


class ApplicationState(_WireEnum):
    NOT_RUNNING = "not_running"
    BACKGROUND = "background"
    FOREGROUND = "foreground"


class PushMessageBehavior(_WireEnum):
    """The schema's string form; the docs' integer bitmask is not supported (docs/models.md)."""

    RECEIVED = "Received"
    DIRECT_OPEN = "DirectOpen"
    READ = "Read"
    INFLUENCED_OPEN = "InfluencedOpen"
    DISPLAYED = "Displayed"


class ProfileEventType(_WireEnum):
    SIGNUP = "signup"
    LOGIN = "login"
    LOGOUT = "logout"
    UPDATE = "update"
    DELETE = "delete"


class DevicePlatform(_WireEnum):
    """``device_info.platform`` as the JSON Schemas spell it (``fire_tv``, not ``FireTV``)."""

    IOS = "iOS"
    ANDROID = "Android"
    WEB = "web"
    TVOS = "tvOS"
    ROKU = "roku"
    OUT_OF_BAND = "out_of_band"
    ALEXA = "alexa"
    SMART_TV = "smart_tv"
    FIRE_TV = "fire_tv"
    XBOX = "xbox"


class AttAuthorizationStatus(_WireEnum):
    AUTHORIZED = "authorized"
    DENIED = "denied"
    NOT_DETERMINED = "not_determined"
    RESTRICTED = "restricted"


class ApplicationOS(_WireEnum):
    """``application_info.os``.

    The schemas call ``Unknown`` the default but refuse it as a value, so it is not offered:
    leave ``os`` unset instead.
    """

    IOS = "IOS"
    ANDROID = "Android"
    WINDOWS_PHONE = "WindowsPhone"
    MOBILE_WEB = "MobileWeb"
    UNITY_IOS = "UnityIOS"
    UNITY_ANDROID = "UnityAndroid"
    DESKTOP = "Desktop"
    TVOS = "TVOS"
    ROKU = "Roku"
    OUT_OF_BAND = "OutOfBand"
    ALEXA = "Alexa"
    SMART_TV = "SmartTV"
    FIRE_TV = "FireTV"
    XBOX = "Xbox"


class LocationSource(_WireEnum):
    UNKNOWN = "unknown"
    IP_LOOKUP = "ip_lookup"
    LAT_LONG = "lat_long"


class DeviceOrientation(_WireEnum):
    PORTRAIT = "portrait"
    PORTRAIT_UPSIDE_DOWN = "portrait_upside_down"
    LANDSCAPE = "landscape"
    LANDSCAPE_LEFT = "LandscapeLeft"
    LANDSCAPE_RIGHT = "LandscapeRight"
    FACE_UP = "FaceUp"
    FACE_DOWN = "FaceDown"
    SQUARE = "Square"


class SystemNotificationType(_WireEnum):
    GDPR_CHANGE = "gdpr_change"
