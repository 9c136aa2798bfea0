"""Stage 4: talking to Braze (the request contract here; the HTTP client next to it)."""
