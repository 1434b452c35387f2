"""Registries: the one place a name maps to code, and the owner of that entry's parameter checks.

Every extension point of kryflow (PDE families, solver methods, preconditioners, models,
optimizers, metrics, figures) is one :class:`Registry`. An entry is registered where it is
defined; a registry given a ``package`` imports that package's private modules the first time
it is asked, so a new entry is one new module and nothing else to edit.

Errors:

* :class:`ParameterError` is what an entry raises for a bad parameter: a ``ValueError`` that
  names the parameter in ``param``, so the config layer can say which config key it is without
  reading the message.
* :class:`ConfigError` is what the config layer raises: it carries the full config key
  (``datasets.darcy.params.tau``) and prints as ``config key '<key>': <message>``.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["ConfigError", "Param", "ParameterError", "Registry", "UnknownName", "check_params", "unknown_names"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the fix.

    **Arguments:**
        message: what is wrong and how to fix it.
        key: the dotted config key (``None`` for errors that concern a whole file).
        keyed_message: prefix the message with the key (off when the message lists several keys).
    """

    def __init__(self, message: str, key: str | None = None, *, keyed_message: bool = True):
        text = f"config key '{key}': {message}" if key and keyed_message else message
        super().__init__(text)
        self.message = message
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def from_parameter(cls, exc: ValueError, prefix: str) -> ConfigError:
        """The config error for an entry's :class:`ParameterError` (or plain ValueError) under ``prefix``."""
        param = getattr(exc, "param", None)
        return cls(str(exc), f"{prefix}.{param}" if param else prefix)


class ParameterError(ValueError):
    """A parameter of a registered entry is invalid.

    **Arguments:**
        message: a sentence that reads on its own (``"tau must be a finite number > 0, got inf"``).
        param: the parameter's name as the entry declares it (``None``: the entry as a whole).
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UnknownName(KeyError, ValueError):
    """A name that is not registered; a ``KeyError`` for mappings, a ``ValueError`` for callers."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, in registration order.

    **Arguments:**
        what: the kind of entry, for messages (``"solver method"``).
        plural: its plural (default ``what + "s"``).
        package: a package whose private modules (``_*.py``) define entries; imported on first use.
    """

    def __init__(self, what: str, plural: str | None = None, package: str | None = None):
        self.what = what
        self.plural = plural or f"{what}s"
        self._package = package
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: entries register while their modules import
        pkg = importlib.import_module(self._package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):  # the same order anywhere
            if info.name.startswith("_") and not info.name.startswith("__"):
                importlib.import_module(f"{self._package}.{info.name}")

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is an error."""
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.what} {name!r}; valid {self.plural}: {sorted(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def lookup(self, name: str, key: str, hint: str = "") -> T:
        """The entry, or a :class:`ConfigError` at ``key`` that lists the valid names."""
        if name not in self:
            raise ConfigError(f"unknown {self.what} '{name}'. Valid: {', '.join(sorted(self))}{hint}", key)
        return self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self)})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Param:
    """One declared parameter of a registry entry: its default and what it accepts.

    **Arguments:**
        default: the value used when the parameter is not given.
        check: predicate on a given value (``None``: anything).
        requirement: what ``check`` demands, as it reads after "must be" ("an integer >= 1").
        choices: the accepted values, when they are an enumeration (the config schema's ``enum``).
        doc: one line for docs and listings.

    Use the constructors :meth:`integer`, :meth:`number`, :meth:`choice`, :meth:`flag`.
    """

    default: Any
    check: Callable[[Any], bool] | None = None
    requirement: str = ""
    choices: tuple | None = None
    doc: str = ""

    @classmethod
    def integer(cls, default: Any, minimum: int = 1, *, optional: bool = False, doc: str = "") -> Param:
        """An integer ``>= minimum`` (``optional``: or ``None``)."""
        text = f"an integer >= {minimum}" + (" or null" if optional else "")
        return cls(default, lambda v: (optional and v is None) or (_is_int(v) and v >= minimum), text, doc=doc)

    @classmethod
    def number(cls, default: Any, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = False, optional: bool = False, doc: str = "") -> Param:
        """A finite number in the interval given by ``low``/``high`` (``*_open``: excluded)."""

        def ok(v: Any) -> bool:
            if optional and v is None:
                return True
            if not _is_number(v):
                return False
            return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        if high == math.inf:
            text = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            text = f"a number in {lo}{low:g}, {high:g}{hi}"
        return cls(default, ok, text + (" or null" if optional else ""), doc=doc)

    @classmethod
    def choice(cls, default: Any, *choices: Any, doc: str = "") -> Param:
        """One of ``choices``."""
        return cls(default, None, "", tuple(choices), doc)

    @classmethod
    def flag(cls, default: bool, doc: str = "") -> Param:
        """``true`` or ``false``."""
        return cls(default, lambda v: isinstance(v, bool), "true or false", doc=doc)

    def validate(self, name: str, value: Any) -> Any:
        """``value`` if it is accepted, else a :class:`ParameterError` naming ``name``."""
        if self.choices is not None:
            if value not in self.choices:
                opts = [repr(c) for c in self.choices]
                text = " or ".join(opts) if len(opts) <= 2 else "one of " + ", ".join(opts)
                raise ParameterError(f"{name} must be {text}, got {value!r}", name)
        elif self.check is not None and not self.check(value):
            raise ParameterError(f"{name} must be {self.requirement}, got {value!r}", name)
        return value


def unknown_names(given: Iterable[str], valid: Iterable[str], owner: str, what: str = "option") -> None:
    """Raise a :class:`ParameterError` (``param``: the first unknown name) if ``given`` has names
    outside ``valid``; ``owner`` and ``what`` word the message ("method 'cg'", "option")."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ParameterError(
            f"unknown {what}(s) {unknown} for {owner}; valid {what}s: {', '.join(valid) or '(none)'}. "
            "Accepted values and defaults: config/README.md",
            unknown[0],
        )


def check_params(declared: Mapping[str, Param], given: Mapping[str, Any], owner: str,
                 what: str = "option") -> dict[str, Any]:
    """Check ``given`` against the ``declared`` parameters of ``owner`` (e.g. "method 'cg'").

    **Returns:** the declared defaults updated with ``given``. Raises :class:`ParameterError`
    for the first unknown or invalid parameter (unknown ones listed with the valid names).
    """
    unknown_names(given, declared, owner, what)
    out = {name: p.default for name, p in declared.items()}
    for name, value in given.items():
        out[name] = declared[name].validate(name, value)
    return out
