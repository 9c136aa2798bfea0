"""Every Braze limit this service enforces, once, with its documented figure and source.

Source keys are those of /work/shared/braze-api.md (its §3 lists the limits, §2.5 the properties
size). Everything that checks a limit imports it from here: the rules (properties size), the
batcher (recipients and bytes per request), the contract and the emulator (what Braze rejects),
the client (its default pace). A figure Braze does not document is not here as if it were Braze's:
our own margins follow in their own section, each derived from a documented limit or saying why.

Documented limits nothing here reaches are left out on purpose: attachments (≤2 MB per file, S1;
we send none), `/sends/id/create` (100 a day, S9; we create none), broadcast pacing (250 a minute,
10 per audience, L; we never broadcast).
"""

from __future__ import annotations

from typing import Final

# -- Braze's documented limits ------------------------------------------------------------------

# S1, S2: `recipients` "≤50 entries"; above it Braze answers 400 "The max number of external_ids
# and aliases per request was exceeded" (E).
MAX_RECIPIENTS_PER_REQUEST: Final = 50

# L: "most endpoints accept ≤4 MB"; larger -> 413 (P) or 400. Read as MiB here; the batcher's
# margin below keeps whole batches under the decimal reading too.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024

# O4, O5: `trigger_properties` / `context` "≤50 KB" each, measured as compact UTF-8 JSON.
MAX_PROPERTIES_BYTES: Final = 50 * 1024

# I: a `send_id` is "ASCII, ≤64 chars".
MAX_SEND_ID_CHARS: Final = 64

# L, R: the default bucket shared by every endpoint without its own limit, per workspace, reset on
# the clock hour. Trigger sends and schedule create/update/delete draw from it.
DEFAULT_REQUESTS_PER_HOUR: Final = 250_000

# -- Ours: margins derived from the limits above ------------------------------------------------

# Room in a request for everything but its recipients: the target id, `send_id`, `schedule` and
# what the client may add. A recipient bigger than MAX_RECIPIENT_BYTES fits in no request at all,
# however it is batched: that is the one "too large" threshold.
REQUEST_ENVELOPE_BYTES: Final = 4 * 1024
MAX_RECIPIENT_BYTES: Final = MAX_REQUEST_BYTES - REQUEST_ENVELOPE_BYTES

# The batcher closes a batch before its body passes BATCH_TARGET_BYTES. The margin keeps every
# batch of several recipients under 4,000,000 bytes as well, should Braze's "4 MB" be decimal:
# only a recipient that must go alone can come closer to MAX_REQUEST_BYTES.
BATCH_MARGIN_BYTES: Final = 256 * 1024
BATCH_TARGET_BYTES: Final = MAX_REQUEST_BYTES - BATCH_MARGIN_BYTES

# The client reads at most this much of a response body (Braze's answers are a few hundred bytes);
# anything longer is cut, so a broken proxy cannot make us buffer megabytes per request.
MAX_RESPONSE_READ_BYTES: Final = 1_000_000
