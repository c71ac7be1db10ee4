"""The sites allowed to carry the chat widget (`serve.allowed_origins`), as browsers name them in `Origin`."""

from __future__ import annotations

from urllib.parse import urlsplit

from chatbot import ConfigError


def parse_origins(origins: list[str]) -> frozenset[str]:
    """The configured origins, as browsers send them (scheme://host[:port], lower case, no path); "*" is any site."""
    parsed = set()
    for origin in origins:
        value = origin.strip().lower().rstrip("/")
        parts = urlsplit(value)
        if value != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query):
            raise ConfigError(f"serve.allowed_origins {origin!r}: expected an origin such as https://shop.example.com "
                              "(scheme, host and port only)")
        parsed.add(value)
    return frozenset(parsed)
