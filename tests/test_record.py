"""snmplb.record: namedtuple's behaviour (the value types of get_hosts rely on it), without its start-up cost."""

from __future__ import annotations

import copy
import pickle
from collections import namedtuple

import pytest

from snmplb.client.settings import ClientSettings, Server
from snmplb.record import record


class Point(record("Point", "x y label", defaults=("",))):
    """A subclass adds what a namedtuple subclass would."""

    __slots__ = ()

    @property
    def norm(self) -> int:
        return abs(self.x) + abs(self.y)


def test_fields_by_position_keyword_and_default_as_a_namedtuple_takes_them():
    reference = namedtuple("Point", "x y label", defaults=("",))
    for args, kwargs in [((1, 2), {}), ((1, 2, "a"), {}), ((1,), {"y": 2}), ((), {"y": 2, "x": 1, "label": "b"})]:
        p = Point(*args, **kwargs)
        assert tuple(p) == tuple(reference(*args, **kwargs))
        assert (p.x, p.y, p.label, p.norm) == (p[0], p[1], p[2], abs(p[0]) + abs(p[1]))
    assert Point._fields == ("x", "y", "label") and Point._field_defaults == {"label": ""}


@pytest.mark.parametrize("args, kwargs, words", [((1,), {}, "'y' missing"), ((1, 2, 3, 4), {}, "takes 3"),
                                                 ((1, 2), {"z": 1}, "no field 'z'"), ((1, 2), {"x": 1}, "twice"),
                                                 ((), {"x": 1, "y": 2, "z": 3}, "no field 'z'")])
def test_wrong_arguments_are_a_type_error_naming_the_field(args, kwargs, words):
    with pytest.raises(TypeError, match=words):
        Point(*args, **kwargs)


def test_replace_repr_equality_hashing_and_pickling_by_value():
    p = Point(1, 2)
    q = p._replace(y=5)
    assert type(q) is Point and q == (1, 5, "") and p == (1, 2, "")
    with pytest.raises(TypeError):
        p._replace(z=1)
    assert repr(p) == "Point(x=1, y=2, label='')" and p._asdict() == {"x": 1, "y": 2, "label": ""}
    assert p == Point(1, 2) and hash(p) == hash(Point(1, 2)) and len({p, Point(1, 2), q}) == 2
    for copied in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert type(copied) is Point and copied == p
    with pytest.raises(AttributeError):
        p.x = 3  # immutable, and no __dict__ to put anything in
    with pytest.raises(AttributeError):
        p.other = 3


def test_the_settings_types_keep_their_namedtuple_behaviour():
    s = ClientSettings(servers=(Server("a"), Server("b", 1161)), community="c")
    assert s.servers[0] == ("a", 161) and s.timeout_ms == 1000
    assert s._replace(timeout_ms=50).timeout_ms == 50 and s.timeout_ms == 1000
    assert pickle.loads(pickle.dumps(s)) == s
    assert {Server("a"): 1}[("a", 161)] == 1  # hashed as the tuple it is


Plain = record("Plain", "a b", defaults=(2,))  # not subclassed: pickle finds it by its module, as a namedtuple


def test_an_unsubclassed_record_pickles_like_a_namedtuple():
    p = Plain(1)
    assert Plain.__module__ == __name__
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Plain
