"""URL policy for downloads and redirects (pure).

Only ``https`` is accepted, except plain ``http`` to a host named in the configuration's
``allow_http_hosts`` (tests on 127.0.0.1, an in-house mirror). Redirect targets are resolved
against the URL that redirected and pass through the very same check, so a redirect can never
lead to ``http://`` elsewhere, ``file://`` or anything else. URLs with credentials, no host,
whitespace or control characters are refused. The URL itself need not be signed: the
artifact's hash and length are.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass

from ._errors import DownloadError, Reason

__all__ = ["Endpoint", "check_url", "resolve_redirect"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect and what to ask for.

    Attributes:
        url: The normalised URL (fragment dropped).
        tls: Whether to speak TLS.
        host: Host name or IP literal (no brackets), also the TLS server name.
        port: TCP port.
        target: The request target (path and query) as sent on the request line.
        host_header: The ``Host`` header value.
    """

    url: str
    tls: bool
    host: str
    port: int
    target: str
    host_header: str


def check_url(url: str, *, allow_http_hosts: Collection[str] = ()) -> Endpoint:
    """Check ``url`` against the download policy.

    Args:
        url: The URL to fetch.
        allow_http_hosts: Hosts for which plain http is allowed.

    Returns:
        The endpoint to connect to.

    Raises:
        DownloadError: ``bad_url``, with the offending URL in the message.
    """
    if not isinstance(url, str) or len(url) > 4096:
        raise DownloadError(Reason.BAD_URL, "URL must be a string of at most 4096 characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise DownloadError(Reason.BAD_URL, f"URL contains whitespace or controls: {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DownloadError(Reason.BAD_URL, f"unparsable URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise DownloadError(Reason.BAD_URL, f"URL has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise DownloadError(Reason.BAD_URL, f"URL must not carry credentials: {url!r}")
    if scheme == "https":
        tls = True
    elif scheme == "http" and host in {h.lower() for h in allow_http_hosts}:
        tls = False
    elif scheme == "http":
        raise DownloadError(Reason.BAD_URL, f"plain http is not allowed for {host!r}: {url!r}")
    else:
        raise DownloadError(Reason.BAD_URL, f"scheme {scheme!r} is not allowed: {url!r}")
    port = port if port is not None else (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    netloc_host = f"[{host}]" if ":" in host else host
    default = 443 if tls else 80
    host_header = netloc_host if port == default else f"{netloc_host}:{port}"
    normalised = urllib.parse.urlunsplit(
        (scheme, host_header, target.split("?")[0], parts.query, "")
    )
    return Endpoint(normalised, tls, host, port, target, host_header)


def resolve_redirect(base: str, location: str, *, allow_http_hosts: Collection[str] = ()) -> str:
    """Resolve a ``Location`` header against ``base`` and check the result.

    Raises:
        DownloadError: ``bad_url`` if the target is not allowed.
    """
    try:
        joined = urllib.parse.urljoin(base, location.strip())
    except ValueError as exc:
        raise DownloadError(Reason.BAD_URL, f"bad redirect {location!r}: {exc}") from exc
    return check_url(joined, allow_http_hosts=allow_http_hosts).url
