"""The generated schema does not depend on the msgspec version (issue 8).

msgspec 0.23 trims the indentation of multi-line docstrings, older versions kept it, so the
committed `dist/protocol.schema.json` went stale on a dependency upgrade. Descriptions are now
derived from the docstrings by the generator itself (`inspect.cleandoc`), whatever msgspec says.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect

import msgspec
import pytest

from krabfast.protocol import jsonschema
from krabfast.methods import METHOD_SPECS
from krabfast.protocol.methods import EVENT_SPECS
from krabfast.protocol.jsonschema import build_definitions, build_schema, clean_doc, named_classes


class Indented(msgspec.Struct):
    """A summary that goes on
    to a second line, as the protocol's docstrings do.

        An indented block keeps its relative indentation.
    """

    a: int


class OneLine(msgspec.Struct):
    """   Just one line.   """

    b: Indented


class Undocumented(msgspec.Struct):
    c: str


class Colour(enum.Enum):
    RED = "red"


class Size(enum.Enum):
    """Sizes,
    in words."""

    BIG = "big"


@dataclasses.dataclass
class Point:
    x: int


class Holder(msgspec.Struct):
    """Holds the others."""

    one: OneLine
    none: Undocumented
    colour: Colour
    size: Size
    point: Point


CLEAN = {
    "Indented": "A summary that goes on\nto a second line, as the protocol's docstrings do.\n\n"
                "    An indented block keeps its relative indentation.",
    "OneLine": "Just one line.",
    "Size": "Sizes,\nin words.",
    "Holder": "Holds the others.",
}


def _descriptions(definitions: dict) -> dict[str, str]:
    return {name: d["description"] for name, d in definitions.items() if "description" in d}


def test_descriptions_are_the_cleandoc_of_the_docstrings():
    assert _descriptions(build_definitions([Holder])) == CLEAN
    assert CLEAN["Indented"] == inspect.cleandoc(Indented.__doc__)


def test_descriptions_do_not_come_from_msgspec(monkeypatch):
    """Whatever msgspec makes of a docstring (here: the raw text, as msgspec < 0.23 kept the
    continuation lines' indentation), the generated description is the cleandoc form."""
    real = msgspec.json.schema_components

    def older_msgspec(types, **kwargs):
        out, components = real(types, **kwargs)
        for name, comp in components.items():
            cls = {"Indented": Indented, "OneLine": OneLine, "Size": Size, "Holder": Holder}.get(name)
            if cls is not None:
                comp["description"] = cls.__doc__.strip("\r\n")
            elif name in ("Colour", "Point"):  # boilerplate docstrings msgspec may or may not skip
                comp["description"] = "An enumeration." if name == "Colour" else "Point(x: int)"
        return out, components

    monkeypatch.setattr(msgspec.json, "schema_components", older_msgspec)
    definitions = build_definitions([Holder])
    assert _descriptions(definitions) == CLEAN
    assert "title" not in str(list(definitions.values()))


def test_the_protocols_descriptions_are_its_cleaned_docstrings():
    schema = build_schema(METHOD_SPECS)
    classes = named_classes(jsonschema._root_types(METHOD_SPECS))
    # Results that are not classes of their own (a list of entries) are named after
    # their method, with a description saying so.
    unnamed = {jsonschema._unnamed_result_name(s.name): f"The answer to `{s.name}`."
               for s in METHOD_SPECS if s.result is not None and not isinstance(s.result, type)}
    # ... and event payloads that are unions of classes (the chat event's states).
    unnamed.update({jsonschema._pascal(e.name) + "Event": f"The `{e.name}` event's payload."
                    for e in EVENT_SPECS if e.payload is not None and not isinstance(e.payload, type)})
    assert unnamed == {"SystemPresenceResult": "The answer to `system-presence`.",
                       "ChatEvent": "The `chat` event's payload."}
    assert set(classes) | set(unnamed) == set(schema["definitions"])
    for name, text in unnamed.items():
        assert schema["definitions"][name]["description"] == text
    for name, definition in schema["definitions"].items():
        if name in unnamed:
            continue
        doc = classes[name].__doc__
        if doc:
            assert definition["description"] == inspect.cleandoc(doc), name
        else:
            assert "description" not in definition, name
    multi = schema["definitions"]["HealthSnapshot"]["description"]
    assert "\n" in multi and "\n " not in multi  # the docstring that went stale on msgspec 0.23


@pytest.mark.parametrize("doc, clean", [
    ("Summary.\n    More.\n    ", "Summary.\nMore."),
    ("\n    Summary.\n      \n    More.  \n", "Summary.\n\nMore."),
    ("Summary.\nMore.", "Summary.\nMore."),  # Python 3.13 trims docstrings at compile time
])
def test_clean_doc(doc, clean):
    assert clean_doc(doc) == clean
