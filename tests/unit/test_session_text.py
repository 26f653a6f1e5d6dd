"""store/session_text.py: what a session row shows for includeDerivedTitles /
includeLastMessage (the reference's projection of the newest message)."""

from __future__ import annotations

import pytest

from krabfast.store.session_text import derived_title, display_text, flatten_markdown


def test_the_derived_title_is_the_label_else_the_display_name():
    assert derived_title("My label", "Shown") == "My label"
    assert derived_title(None, "Shown") == "Shown"
    assert derived_title("  ", "") is None and derived_title(None, None) is None


@pytest.mark.parametrize("role, content, shown", [
    ("user", "  hi there ", "hi there"),
    ("user", "[WebChat 2026-01-02 10:00] hi", "hi"),
    ("user", "[my note] hi", "[my note] hi"),  # a user's own brackets stay
    ("user", [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "input_text", "text": "b"}],
     "a\nb"),
    ("assistant", [{"type": "text", "text": "one"}, {"type": "text", "text": "  "},
                   {"type": "text", "text": "two"}], "one\ntwo"),
    ("assistant", [{"type": "text", "text": "NO_REPLY"}], None),
    ("assistant", [], None),
    ("system", "rules", None),
    ("user", "   ", None),
])
def test_what_a_message_shows(role, content, shown):
    assert display_text(role, content) == shown


def test_long_text_is_cut_to_240_with_an_ellipsis():
    shown = display_text("user", "y" * 500)
    assert len(shown) == 240 and shown.endswith("...")


def test_the_preview_flattens_markdown():
    assert flatten_markdown("# Title\n\n- **bold** and _it_ `code`\n```\nblock\n```\n"
                            "[link](http://x) ~~gone~~") == "Title bold and it code link gone"
    assert flatten_markdown("snake_case_name stays") == "snake_case_name stays"
    assert display_text("assistant", [{"type": "text", "text": "**Done.**"}],
                        flatten=True) == "Done."


def test_a_long_message_is_previewed_from_its_head_after_its_code_blocks():
    code = "```\n" + "x = 1\n" * 500 + "```\n"
    shown = display_text("assistant", [{"type": "text", "text": code + "**After** the code. "
                                        + "more words " * 400}], flatten=True)
    assert shown.startswith("After the code. more words") and len(shown) == 240
