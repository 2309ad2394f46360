"""Which pip sources a runtime_env may use on this node (the admin's allowlist).

`manta start --pip-allow-index URL --pip-allow-package NAME` (each may be
repeated; Config's `pip_allow_indexes`, `pip_allow_packages`). With neither,
a runtime_env installs what it names from where it says, as in Ray. With
them, the agent refuses, before it runs pip, a runtime_env that:
- names a package not on the package list (names compared as PEP 503
  normalizes them: `Foo_Bar` is `foo-bar`);
- names a requirement by URL, path, VCS or editable install, or a
  requirements or constraints file, none of which an allowlist can check;
- gives an index or find-links location not on the index list, or any pip
  option other than the few below, which change how pip resolves and never
  where it downloads from.
Where indexes are restricted and a runtime_env names none, pip is given the
first allowed one, so it never falls back to PyPI on its own. A package's
own dependencies are resolved by pip from the allowed indexes: the package
list names what a runtime_env may ask for, the index list where anything
may come from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from manta._private.protocol.runtime_env import PipSpec

# A requirement by name: name, extras, then version specifiers and a marker.
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[A-Za-z0-9._,\s-]*\])?\s*(.*)$")
# What may follow a name: version clauses (==1.2, >=1,<2, ~=1.0); a marker after ';'.
_CLAUSE = r"\s*(?:~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*"
_SPECIFIERS = re.compile(f"^(?:{_CLAUSE}(?:,{_CLAUSE})*)?\\s*$")
# Options that say where pip downloads from, each followed by a location.
_SOURCES = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
# Options that only change how pip resolves and installs.
_HARMLESS = {
    "--no-deps", "--pre", "--upgrade", "-U", "--no-cache-dir", "--prefer-binary", "--force-reinstall",
    "--ignore-installed", "-I", "--quiet", "-q", "--verbose", "-v", "--no-index", "--only-binary",
    "--no-binary", "--require-hashes", "--no-build-isolation", "--upgrade-strategy", "--timeout", "--retries",
    "--disable-pip-version-check", "--progress-bar",
}
_HARMLESS_WITH_VALUE = {"--only-binary", "--no-binary", "--upgrade-strategy", "--timeout", "--retries",
                        "--progress-bar"}
_HASHES = re.compile(r"\s+--hash[= ](?:sha256|sha384|sha512):[0-9a-fA-F]+")
# A "name" pip would read as a local file.
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _location(url: str) -> str:
    return url.rstrip("/")


@dataclass(frozen=True)
class PipPolicy:
    indexes: tuple[str, ...] = ()
    packages: frozenset[str] = frozenset()

    @classmethod
    def of(cls, indexes: Sequence[str], packages: Sequence[str]) -> PipPolicy:
        return cls(tuple(_location(u) for u in indexes), frozenset(normalize(p) for p in packages))

    @property
    def restricted(self) -> bool:
        return bool(self.indexes or self.packages)

    def refusal(self, spec: PipSpec) -> str:
        """Why this node may not build `spec` ("" if it may)."""
        if not self.restricted:
            return ""
        for line in spec.packages:
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            why = self._options(text.split()) if text.startswith("-") else self._requirement(text)
            if why:
                return why
        return self._options(list(spec.install_options))

    def _requirement(self, text: str) -> str:
        text = _HASHES.sub("", text)  # pinning a requirement's hashes only narrows what pip accepts
        match = _REQUIREMENT.match(text)
        rest = match.group(3) if match else ""
        specifiers = rest.split(";", 1)[0]
        if (match is None or "://" in text or "@" in specifiers or not _SPECIFIERS.match(specifiers)
                or match.group(1).lower().endswith(_ARCHIVES)):
            return (f"{text!r} is not a package name with a version: this cluster installs runtime_env "
                    f"packages only by name, from its allowed indexes (no URLs, paths or VCS)")
        name = normalize(match.group(1))
        if self.packages and name not in self.packages:
            return (f"the package {match.group(1)!r} is not allowed on this cluster "
                    f"(allowed: {', '.join(sorted(self.packages))})")
        return ""

    def _options(self, args: list[str]) -> str:
        i = 0
        while i < len(args):
            arg = args[i]
            flag, eq, value = arg.partition("=")
            if flag in _SOURCES:
                if not eq:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if self.indexes and _location(value) not in self.indexes:
                    return (f"the pip index {value!r} is not allowed on this cluster "
                            f"(allowed: {', '.join(self.indexes)})")
                if not self.indexes:
                    return (f"{flag} {value}: this cluster installs runtime_env packages only from "
                            f"its default index")
            elif flag in _HARMLESS:
                if flag in _HARMLESS_WITH_VALUE and not eq:
                    i += 1
            else:
                return f"the pip option {arg!r} is not allowed on this cluster, whose pip sources are restricted"
            i += 1
        return ""

    def index_options(self, spec: PipSpec) -> list[str]:
        """What pip is given besides the spec's own options: the first allowed
        index, unless the spec names one of its own (checked by `refusal`)."""
        if not self.indexes:
            return []
        named = any(
            a.split("=", 1)[0] in ("-i", "--index-url", "--no-index")
            for line in [*spec.install_options, *(p for p in spec.packages if p.strip().startswith("-"))]
            for a in line.split()
        )
        return [] if named else ["--index-url", self.indexes[0]]
