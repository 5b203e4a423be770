"""The custom_id batchd sends a vendor for a request, and the request key behind one."""

from __future__ import annotations

# Vendor ids of requests whose answers must not enter the cache start with this.
NO_CACHE_PREFIX = "x"
GUARD_TAGS = ("s", "p", "j")  # quality guard lines: shadow, probe, judge (batchd.quality)


def vendor_id(key: bytes, cacheable: bool) -> str:
    """The custom_id batchd sends for a request key: safe for every vendor's id rules."""
    return key.hex() if cacheable else NO_CACHE_PREFIX + key.hex()


def key_of(vendor_id: str) -> bytes:
    """The request key behind a vendor custom_id (a quality guard line's: key + its tag)."""
    body = vendor_id.removeprefix(NO_CACHE_PREFIX)
    if body[:1] in GUARD_TAGS:  # never hex: x<tag><hex> (planning.shadows.retag)
        return bytes.fromhex(body[1:]) + body[:1].encode()
    return bytes.fromhex(body)


def cacheable(vendor_id: str) -> bool:
    return not vendor_id.startswith(NO_CACHE_PREFIX)
