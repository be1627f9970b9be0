"""A deployment's own release check, loaded from INSITU_RELEASE_EXTRA_CHECKS by the tests."""

from __future__ import annotations

from insitu.releases.checks import Finding, Item, Run
from insitu.releases.models import Verdict


class NoSecrets:
    """Refuses files that mention a password."""

    name = "no-secrets"

    def check(self, item: Item, run: Run) -> Finding:
        if b"password" in item.head():
            return Finding(self.name, Verdict.refused, "mentions a password")
        return Finding(self.name, Verdict.passed, "mentions no password")
