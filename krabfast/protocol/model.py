"""Base Struct and constrained types shared by every schema module."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class Model(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True, kw_only=True):
    """Wire object: camelCase on the wire, unknown keys rejected, unset optionals omitted."""


NonEmptyStr = Annotated[str, Meta(min_length=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
PosInt = Annotated[int, Meta(ge=1)]
NonNegFloat = Annotated[float, Meta(ge=0)]
TraceParent = Annotated[str, Meta(max_length=128)]
