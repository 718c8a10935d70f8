"""Immutable records with named fields: what ``collections.namedtuple`` gives, without its cost at start-up.

get_hosts defines a dozen value types at every login on a thin client.
``namedtuple`` compiles a constructor for each (an ``eval`` of generated
source, ~0.1 ms apiece on a thin client) and needs ``collections`` imported;
``record`` builds the same kind of class from ready-made functions:

- a ``tuple`` subclass with ``__slots__ = ()``: equality, ordering, hashing
  and unpacking by value, as before;
- fields by position or keyword, trailing ``defaults``;
- ``_fields``, ``_field_defaults``, ``_replace(**changes)``, ``_asdict()``,
  a ``Name(field=value, ...)`` repr, and pickling (``__getnewargs__``).

Subclass it to add properties and a docstring, as with a namedtuple::

    class Server(record("Server", "host port", defaults=(161,))):
        __slots__ = ()
"""

from __future__ import annotations

import sys
from operator import itemgetter

_MISSING = object()


def _record(typename: str, field_names: str | tuple[str, ...], defaults: tuple[object, ...] = ()) -> type:
    """A tuple subclass named ``typename`` with ``field_names`` (a string of space-separated names, or a
    tuple), the last ``len(defaults)`` of which take these defaults."""
    fields = tuple(field_names.split()) if isinstance(field_names, str) else tuple(field_names)
    count = len(fields)
    defaults = tuple(defaults)
    if len(set(fields)) != count or any(not f.isidentifier() or f.startswith("_") for f in fields):
        raise ValueError(f"{typename}: field names must be distinct identifiers without a leading _")
    if len(defaults) > count:
        raise ValueError(f"{typename}: more defaults than fields")
    first_default = count - len(defaults)
    index = {f: i for i, f in enumerate(fields)}

    def __new__(cls: type[tuple[object, ...]], *args: object,  # noqa: N807 - the constructor of the class built below
                **kwargs: object) -> tuple[object, ...]:
        if len(args) == count and not kwargs:
            return tuple.__new__(cls, args)
        if not args and len(kwargs) == count:  # every field by name (a table of dicts, as the MIB's data)
            try:
                return tuple.__new__(cls, [kwargs[f] for f in fields])
            except KeyError:
                pass  # a name that is no field: said below
        if len(args) > count:
            raise TypeError(f"{typename} takes {count} fields, {len(args)} given")
        values = [*args, *(_MISSING,) * (count - len(args))]
        for name, value in kwargs.items():
            i = index.get(name)
            if i is None:
                raise TypeError(f"{typename} has no field {name!r}")
            if i < len(args):
                raise TypeError(f"{typename}: {name!r} given twice")
            values[i] = value
        for i in range(len(args), count):
            if values[i] is _MISSING:
                if i < first_default:
                    raise TypeError(f"{typename}: {fields[i]!r} missing")
                values[i] = defaults[i - first_default]
        return tuple.__new__(cls, values)

    def _replace(self: tuple[object, ...], **changes: object) -> tuple[object, ...]:
        """A copy with ``changes`` (field=value) applied."""
        values = list(self)
        for name, value in changes.items():
            i = index.get(name)
            if i is None:
                raise TypeError(f"{typename} has no field {name!r}")
            values[i] = value
        return tuple.__new__(type(self), values)

    def _asdict(self: tuple[object, ...]) -> dict[str, object]:
        """The fields as a new dict, in order."""
        return dict(zip(fields, self))

    def __repr__(self: tuple[object, ...]) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{f}={v!r}" for f, v in zip(fields, self)) + ")"

    def __getnewargs__(self: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(self)

    namespace: dict[str, object] = {
        "__slots__": (), "__doc__": f"{typename}({', '.join(fields)})", "_fields": fields,
        "_field_defaults": dict(zip(fields[first_default:], defaults)), "__match_args__": fields,
        "__new__": __new__, "_replace": _replace, "_asdict": _asdict, "__repr__": __repr__,
        "__getnewargs__": __getnewargs__,
        # The caller's module, as namedtuple sets it: pickle finds an unsubclassed record there.
        "__module__": sys._getframe(1).f_globals.get("__name__", __name__)}
    for i, name in enumerate(fields):
        namespace[name] = property(itemgetter(i), doc=f"Alias for field number {i}")
    return type(typename, (tuple,), namespace)


# mypy knows namedtuple's classes (fields by name, defaults, _replace's keywords, _fields...) and no
# class built by a call of its own (a dynamic base: Any), so it is told that record is namedtuple,
# which record's classes behave as (tests/test_record.py; record has no _make, which nothing calls):
# the records' fields are then checked by name.
TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections import namedtuple as record
    __all__ = ["record"]  # the name the package imports from here (mypy: an explicit export)
else:
    record = _record
