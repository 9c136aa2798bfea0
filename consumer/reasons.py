"""The `dlq.reason` classes of product.md: one spelling for every stage that can dead-letter."""


class Reason:
    INVALID_JSON = "invalid_json"
    MAPPING_ERROR = "mapping_error"
    TOO_LARGE = "too_large"
    BRAZE_REJECTED = "braze_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
