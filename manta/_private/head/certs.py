"""The head's side of node certificates: signs the CSRs nodes send (am.IssueCert).

Only a CLUSTER principal reaches this (auth.policy), i.e. a holder of the
cluster token; the CA key stays in the head's session directory (0600)."""

from __future__ import annotations

import logging
import os
from typing import Any

from manta._private.auth import tls_contexts
from manta._private.protocol import auth_messages as am
from manta._private.protocol import messages as m
from manta._private.transport.connection import Connection

log = logging.getLogger(__name__)


class CertIssuer:
    def __init__(self, tls_dir: str, days: float) -> None:
        with open(os.path.join(tls_dir, tls_contexts.CA_FILE), "rb") as f:
            self.ca = f.read()
        with open(os.path.join(tls_dir, tls_contexts.CA_KEY_FILE), "rb") as f:
            self.ca_key = f.read()
        self.days = days

    @classmethod
    def of(cls, session_dir: str, days: float) -> CertIssuer | None:
        """None unless this head made (or was given) the CA with its key."""
        tls_dir = os.path.join(session_dir, "tls") if session_dir else ""
        if not tls_dir or not os.path.exists(os.path.join(tls_dir, tls_contexts.CA_KEY_FILE)):
            return None
        return cls(tls_dir, days)

    def handle(self, conn: Connection, msg: Any) -> None:
        # Imported at the first certificate: x509 costs a process 8 MB and 30 ms
        # (-X importtime), and a head without TLS issues none.
        from manta._private.auth import pki

        try:
            cert = pki.issue(self.ca, self.ca_key, msg.csr, self.days, tuple(msg.hosts))
        except tls_contexts.TlsError as e:
            conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
            return
        log.info("issued a certificate to %s for %g days", conn.principal.name, self.days)
        conn.reply(msg, am.CertIssued(cert=cert, ca=self.ca))


def refuse_without_ca(conn: Connection, msg: Any) -> None:
    conn.reply_error(msg, m.ErrorKind.VALUE, "this head has no CA key: TLS is off, or its certificates were "
                     "brought (--tls-ca/--tls-cert/--tls-key); give this node its own too")
