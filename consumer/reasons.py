"""The `dlq.reason` classes of product.md: one spelling for every stage that can dead-letter.

Every reason is the event's fault. A failure of Braze or of the deployment (an outage, a bad key, a
proxy in the way) is never a dead letter: the pipeline holds instead (`consumer.hold`).
"""

from enum import StrEnum


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    # A Schema Registry record (Confluent wire format) whose schema id the registry does not know,
    # or whose bytes do not decode with their schema; or no registry is configured.
    INVALID_PAYLOAD = "invalid_payload"
    MAPPING_ERROR = "mapping_error"
    TOO_LARGE = "too_large"
    BRAZE_REJECTED = "braze_rejected"
