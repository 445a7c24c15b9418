"""The numbers of the tracking API contract, in one place."""

MAX_MESSAGE_BYTES = 32 * 1024  # one message, encoded (32768)
MAX_BATCH_BYTES = 500 * 1024  # one batch request, decoded (512000)
MAX_BATCH_ITEMS = 2500
MAX_EVENT_NAME = 200
MAX_ID_CHARS = 255
MAX_MESSAGE_ID_CHARS = 100
MAX_PROPERTIES = 255
MAX_PROPERTY_NAME = 255
MAX_NESTING = 3
MAX_ARRAY_ELEMENTS = 255

TYPES = ("track", "identify", "page", "screen", "group", "alias")
# Which field of each type holds the user-supplied key/value object.
PAYLOAD_FIELD = {
    "track": "properties",
    "page": "properties",
    "screen": "properties",
    "identify": "traits",
    "group": "traits",
}
TIMESTAMP_FIELDS = ("timestamp", "sentAt", "originalTimestamp")
