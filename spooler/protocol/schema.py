"""How a request is declared, built and checked: the machinery behind ``requests``.

A request is a class whose annotated attributes are its fields.  The client builds one with
keyword arguments, which the type checker checks, and sends :meth:`Request.wire`; the daemon
turns the map it receives back into the same class with :meth:`Request.parse`, the one
validation step: types, ranges and lengths, one clear message for the first field that is
wrong.

A field's kind comes from its annotation: ``int`` (within ``lo``..``hi``), ``int | None``,
``bool``, ``str`` (required), ``str | None``, ``list[int]`` (job ids); any other type names a
``check`` function.

On the client's hot path: no dataclasses, no typing at run time (see ``TYPE_CHECKING``).
"""

from __future__ import annotations

from spooler.protocol import PROTOCOL_VERSION, RequestError, bad

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    from typing_extensions import Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> object:
        return lambda cls: cls


MAX_ID = 2**62


REQUIRED = object()  # the default of a field every request must carry


class Field:
    """How one field is checked; see the module docstring for the kinds."""

    __slots__ = ("check", "default", "factory", "hi", "kind", "lo", "max_len", "nullable")

    def __init__(
        self,
        default: Any,
        factory: Callable[[], Any] | None,
        lo: int,
        hi: int,
        max_len: int,
        check: Callable[[Any, str], Any] | None,
        nullable: bool,
    ) -> None:
        self.default, self.factory = default, factory
        self.lo, self.hi, self.max_len = lo, hi, max_len
        self.check, self.nullable = check, nullable
        self.kind = ""  # from the annotation, when the class is made

    def fresh(self) -> Any:
        return self.factory() if self.factory is not None else self.default

    def parse(self, msg: dict[str, Any], name: str) -> Any:
        value = msg.get(name)
        if value is None and self.default is REQUIRED:
            raise bad(f"{name} is required")
        if name not in msg or (value is None and self.nullable and self.kind != "bool"):
            return self.fresh()
        return _KINDS[self.kind](self, value, name)


def field(
    *,
    default: Any = REQUIRED,
    default_factory: Callable[[], Any] | None = None,
    lo: int = 0,
    hi: int = MAX_ID,
    max_len: int = 4096,
    check: Callable[[Any, str], Any] | None = None,
    nullable: bool = True,
) -> Any:
    """A field's default and limits; a field without a default is required.
    ``nullable=False``: a field sent as nil is refused rather than taken as absent."""
    if default_factory is not None:
        default = None
    return Field(default, default_factory, lo, hi, max_len, check, nullable)


# -- the kinds ---------------------------------------------------------------------------------


def _int(spec: Field, value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{name} must be a whole number")
    if not spec.lo <= value <= spec.hi:
        raise bad(f"{name} must be between {spec.lo} and {spec.hi}, not {value}")
    return value


def _flag(spec: Field, value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false")
    return value


def _text(spec: Field, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise bad(f"{name} must be a string")
    if len(value) > spec.max_len:
        raise bad(f"{name} is longer than {spec.max_len} characters")
    if "\0" in value:
        raise bad(f"{name} contains a NUL character")
    return value


def _ids(spec: Field, value: Any, name: str) -> list[int]:
    value = value or []
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise bad(f"{name} must be a list of job ids")
    return list(dict.fromkeys(value))


def _checked(spec: Field, value: Any, name: str) -> Any:
    assert spec.check is not None
    return spec.check(value, name)


_KINDS: dict[str, Callable[[Field, Any, str], Any]] = {
    "int": _int,
    "int | None": _int,
    "bool": _flag,
    "str": _text,
    "str | None": _text,
    "list[int]": _ids,
    "": _checked,
}


# -- the base class ----------------------------------------------------------------------------


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
class Request:
    """One request type; subclasses name their ``op`` and declare their fields."""

    OP: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, op: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.OP = op
        fields = dict(cls.FIELDS)
        # Not inspect.get_annotations: importing inspect would cost ts several milliseconds.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for name, kind in annotations.items():
            spec = cls.__dict__.get(name)
            if not isinstance(spec, Field):
                continue  # a ClassVar
            spec.kind = "" if spec.check is not None else kind
            if spec.kind not in _KINDS:
                raise TypeError(f"{cls.__name__}.{name}: a field of type {kind} needs a check")
            fields[name] = spec
            delattr(cls, name)  # instances hold the values; the class holds FIELDS
        cls.FIELDS = fields
        if op:
            REQUESTS[op] = cls

    def __init__(self, **values: Any) -> None:
        for name, spec in self.FIELDS.items():
            if name not in values and spec.default is REQUIRED:
                raise TypeError(f"{type(self).__name__} needs {name}")
            setattr(self, name, values.pop(name) if name in values else spec.fresh())
        if values:
            raise TypeError(f"{type(self).__name__} has no field {sorted(values)[0]!r}")

    def fields(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as they travel (nested requests as maps)."""
        out: dict[str, Any] = {}
        for name, spec in self.FIELDS.items():
            value = getattr(self, name)
            if value is None or (spec.default is not REQUIRED and value == spec.fresh()):
                continue
            if isinstance(value, Request):
                value = value.fields()
            elif isinstance(value, list) and value and isinstance(value[0], Request):
                value = [v.fields() for v in value]
            out[name] = value
        return out

    def wire(self) -> dict[str, Any]:
        """The request map the client sends."""
        return {"v": PROTOCOL_VERSION, "op": self.OP, **self.fields()}

    @classmethod
    def parse(cls, msg: dict[str, Any], where: str = "") -> Self:
        """The daemon's side: a checked request from a received map (unknown keys are ignored,
        so an older daemon tolerates a newer client's extras)."""
        request = cls.__new__(cls)
        try:
            for name, spec in cls.FIELDS.items():
                setattr(request, name, spec.parse(msg, name))
        except RequestError as exc:
            if where:
                raise bad(f"{where}: {exc}") from None
            raise
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fields()!r})"


REQUESTS: dict[str, type[Request]] = {}
