"""The network a service needs: what its unit must allow, decided from the app's own settings.

The default profile denies IP traffic with other hosts (``IPAddressDeny=any`` beside
``IPAddressAllow=localhost``), and with socket activation takes the network away
(``PrivateNetwork=yes``, ``AF_UNIX`` only). Either breaks an app that talks to a database
or an API elsewhere, and silently: a denied TCP connect is not refused, its SYNs are
dropped and the client waits for its own timeout; DNS to a non-local resolver fails.

Two things say what the app connects to:

- the URL-like values of the spec's environment (``DATABASE_URL``, ``REDIS_URL``,
  ``*_URL``, ``*_URI``, ``*_DSN``, ``*_HOST``, ``PGHOST``): a data store's URL is a
  connection the app makes for certain, so its literal IP address is allowed, a host name
  drops ``IPAddressDeny=`` (IPAddressAllow= takes addresses, and the name needs DNS), a
  unix socket needs nothing; with socket activation a TCP one is refused, since opskit
  does not give the network back on its own. An http(s) URL may just as well be one the
  app only renders (``SITE_URL``, ``STATIC_URL``): a warning names the fix, nothing is
  relaxed;
- the app's dependencies (``DEPENDENCIES``): a client library without a URL says that the
  app connects somewhere, not where, so it only draws a warning.

``decide`` is pure and reads the spec alone (the unit depends on nothing else);
``network_needs`` adds what ``dependencies`` reads from the project and its venv, which
only adds warnings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opskit.spec import AppSpec
from opskit.systemd.dependencies import DEPENDENCIES, Dependencies, dependencies
from opskit.systemd.endpoints import (
    KIND_NAMES,
    UNIX_SOCKET_HINTS,
    UNIX_SOCKET_KINDS,
    Endpoint,
    Unreadable,
    endpoints,
)

Mode = Literal["private", "deny", "open"]


@dataclass(frozen=True)
class NetworkDecision:
    """What the unit allows, and why: the network directives and the lines that say so."""

    #: "private": PrivateNetwork=yes and AF_UNIX only; "deny": IPAddressAllow= ``allow``
    #: and IPAddressDeny=any; "open": no IP restriction.
    mode: Mode
    #: The IPAddressAllow= entries when ``mode`` is "deny".
    allow: tuple[str, ...] = ()
    #: What opskit relaxed on its own, for the unit's "# Relaxed:" comments.
    relaxed: tuple[str, ...] = ()
    #: The decision and its reasons, and warnings ("warning: ..."): one line each for stderr.
    notes: tuple[str, ...] = ()
    #: Why the spec cannot work under this profile: the generator refuses it (exit 2).
    errors: tuple[str, ...] = ()
    #: The endpoints found in the environment.
    endpoints: tuple[Endpoint, ...] = field(default=(), compare=False)

    @property
    def outbound(self) -> bool:
        """Whether the service may connect anywhere (no IPAddressDeny=, no PrivateNetwork=)."""
        return self.mode == "open"

    @property
    def directives(self) -> list[tuple[str, str]]:
        """RestrictAddressFamilies= and the IP directives, in unit order."""
        if self.mode == "private":
            # The .socket unit's listening socket is inherited, so the service itself
            # needs no network: no interfaces but loopback, no new inet sockets.
            return [("PrivateNetwork", "yes"), ("RestrictAddressFamilies", "AF_UNIX")]
        d = [("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX")]
        if self.mode == "deny":
            d += [("IPAddressAllow", " ".join(self.allow)), ("IPAddressDeny", "any")]
        return d


def loopback_only(spec: AppSpec) -> bool:
    """Whether the server listens on loopback or a unix socket only (behind a proxy)."""
    if spec.unix_socket or spec.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(spec.host).is_loopback
    except ValueError:
        return False


def decide(spec: AppSpec, found: Dependencies | None = None) -> NetworkDecision:
    """Decide the unit's network rules from the spec (and warn from the dependencies).

    The unit depends on the spec alone; ``found`` (see ``dependencies``) only adds
    warnings, so the same spec gives the same unit on every machine.
    """
    h = spec.hardening
    eps = endpoints(spec.environment)
    if h.profile != "default" or h.allow_outbound:
        # No IP rules in these profiles: nothing to allow, nothing to warn about.
        return NetworkDecision("open", endpoints=tuple(e for e in eps if isinstance(e, Endpoint)))
    if not spec.socket and not loopback_only(spec):
        notes = ["no IPAddressDeny=: the app listens on a non-loopback address"]
        if h.ip_address_allow:
            notes.append(
                "warning: hardening.ip-address-allow is not applied: IPAddressDeny=any would "
                "also refuse the clients of a server on a non-loopback address"
            )
        return NetworkDecision("open", relaxed=tuple(notes[:1]), notes=tuple(notes))
    return _Decider(spec, eps, found or Dependencies()).decide()


class _Decider:
    def __init__(
        self, spec: AppSpec, eps: list[Endpoint | Unreadable], found: Dependencies
    ) -> None:
        self.spec = spec
        self.eps = eps
        self.found = found
        self.user = spec.hardening.ip_address_allow
        # With --socket and no entries of the user's, the network is private: opskit does
        # not give it back on its own (see _private_tcp).
        self.private = spec.socket and not self.user
        self.allow = list(self.user) if spec.socket else ["localhost", *self.user]
        self.outbound = False
        self.relaxed: list[str] = []
        self.notes: list[str] = []
        self.errors: list[str] = []

    def decide(self) -> NetworkDecision:
        for ep in self.eps:
            if isinstance(ep, Unreadable):
                self.notes.append(f"warning: {ep.variable}: cannot read its host ({ep.reason})")
            elif not ep.tcp:
                self._unix(ep)
            elif self.private and ep.certain:
                self._private_tcp(ep)
            elif ep.address is not None:
                self._literal(ep)
            else:
                self._name(ep)
        if self.outbound:
            # No IPAddressDeny= at all: the addresses allowed on the way say nothing.
            self.relaxed = [r for r in self.relaxed if not r.startswith("IPAddressAllow=")]
            self.notes = [n for n in self.notes if not n.startswith("IPAddressAllow=")]
        if self.spec.socket and self.user and not self.outbound:
            self.notes.append(
                f"with --socket: IP to {' '.join(dict.fromkeys(self.allow))} only "
                "(hardening.ip-address-allow), instead of no network (PrivateNetwork=yes)"
            )
        self._dependencies()
        mode: Mode = "open" if self.outbound else "private" if self.private else "deny"
        return NetworkDecision(
            mode,
            allow=tuple(dict.fromkeys(self.allow)) if mode == "deny" else (),
            relaxed=tuple(self.relaxed),
            notes=tuple(self.notes),
            errors=tuple(self.errors),
            endpoints=tuple(e for e in self.eps if isinstance(e, Endpoint)),
        )

    def _denied(self, target: str = "it") -> str:
        if self.private:
            return "with --socket the service has no network (PrivateNetwork=yes)"
        return f"under IPAddressDeny=any a connect to {target} hangs (its SYNs are dropped)"

    def _unix(self, ep: Endpoint) -> None:
        where = ep.unix or "its default unix socket"
        self.notes.append(f"{ep.variable}: through {where}: no IP address needed")

    def _private_tcp(self, ep: Endpoint) -> None:
        # A unit that certainly cannot reach its database: refused rather than written
        # with a warning that scrolls by. The fixes are the user's to choose.
        fixes = []
        if ep.kind in UNIX_SOCKET_KINDS:
            hint = UNIX_SOCKET_HINTS.get(ep.kind)
            fixes.append(f"its unix socket ({hint})" if hint else "its unix socket")
        if ep.address is not None:
            fixes.append(f"--ip-address-allow {ep.entry}")
        fixes.append("--allow-outbound")
        self.errors.append(
            f"environment.{ep.variable}: connects to {ep.host} over TCP, but {self._denied()}; "
            f"use {', or '.join(fixes)}"
        )

    def _literal(self, ep: Endpoint) -> None:
        entry = ep.covered_by(self.allow)
        if entry is not None:
            self.notes.append(f"{ep.variable}: {ep.host} is allowed (IPAddressAllow={entry})")
        elif not ep.certain:
            self.notes.append(
                f"warning: {ep.variable} names {ep.host}: if the app connects there, "
                f"{self._denied()}; give --ip-address-allow {ep.entry}"
            )
        else:
            self.allow.append(ep.entry)
            reason = f"IPAddressAllow={ep.entry}: {ep.variable} connects to it"
            self.relaxed.append(reason)
            self.notes.append(reason)

    def _name(self, ep: Endpoint) -> None:
        if not ep.certain:
            self.notes.append(
                f"warning: {ep.variable} names the host {ep.host}: if the app connects there, "
                f"{self._denied()}; give --allow-outbound (or --ip-address-allow with its "
                "address and a DNS resolver's)"
            )
        elif self.user:
            # The user chose the addresses: opskit does not override that choice.
            self.notes.append(
                f"warning: {ep.variable} names the host {ep.host}: IPAddressAllow= takes "
                "addresses, so hardening.ip-address-allow must hold its address and a DNS "
                "resolver's (or use --allow-outbound)"
            )
        else:
            self.outbound = True
            reason = (
                f"no IPAddressDeny=: {ep.variable} names the host {ep.host} "
                "(IPAddressAllow= takes addresses only, and the name needs DNS)"
            )
            self.relaxed.append(reason)
            self.notes.append(reason)

    def _dependencies(self) -> None:
        if self.outbound:
            return
        if self.found.problems:
            self.notes += [f"warning: {p}" for p in self.found.problems]
        by_kind: dict[str, list[str]] = {}
        for name in sorted(self.found.names):
            kind = DEPENDENCIES.get(name)
            if kind:
                by_kind.setdefault(kind, []).append(name)
        seen = {ep.kind for ep in self.eps if isinstance(ep, Endpoint) and ep.certain}
        if "database" in seen:
            seen.update(k for k in UNIX_SOCKET_KINDS)
        for kind, names in by_kind.items():
            if kind in seen:
                continue
            what = KIND_NAMES[kind]
            subject = (
                f"{names[0]} ({what}) is a dependency"
                if len(names) == 1
                else f"{', '.join(names)} ({what.removeprefix('a ').removeprefix('an ')}s) "
                "are dependencies"
            )
            if kind in ("http", "cloud"):
                self.notes.append(
                    f"warning: {subject}: {self._denied('another host')} "
                    "until the client's timeout, and a host name needs DNS; if the app "
                    "connects out, give --ip-address-allow ADDR or --allow-outbound"
                )
                continue
            unix = "; its unix socket works as is" if kind in UNIX_SOCKET_KINDS else ""
            over = "over TCP, even to 127.0.0.1," if self.private else "over TCP to another host"
            self.notes.append(
                f"warning: {subject}, and no URL in the environment says where it connects: "
                f"{over} it needs --ip-address-allow ADDR (a host name: --allow-outbound){unix}"
            )


def network_needs(spec: AppSpec, project: Path) -> NetworkDecision:
    """The decision for ``spec`` with the warnings from the dependencies found in ``project``."""
    return decide(spec, dependencies(spec, project))
