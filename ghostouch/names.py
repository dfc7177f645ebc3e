"""Gesture names: the form they are stored in and the rules a usable name follows.

Plain Python (no FastAPI): the API (`api/training.py`, `api/gestures.py`) turns `InvalidName`
into a 422, `ghostouch base import` into an error naming the CSV line.
"""

from __future__ import annotations

import unicodedata

from ghostouch.config import MAX_GESTURE_CHARS

ZERO_WIDTH_JOINERS = "\u200c\u200d"
BLACK_FLAG = "\U0001f3f4"
DIRECTION_MARKS = dict.fromkeys(map(ord, "\u200e\u200f\u061c"))

# Spaces and format characters (zero-width space, direction marks): a name of nothing else shows
# as blank in the apps.
INVISIBLE = frozenset({"Zs", "Cf", "Mn", "Me"})
# Letters and symbols that render as nothing: the Hangul fillers and the blank Braille pattern.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


# Characters that change nothing a reader can tell apart in a name: variation selectors (an
# emoji's text or emoji style, a CJK glyph variant) and the combining grapheme joiner. Names equal
# but for them, for full-width or half-width forms, or for a zero-width non-joiner between Latin
# letters (scripts such as Persian and Devanagari render it), count as one name (`lookalike_key`).
_UNSEEN = dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), *range(0x180B, 0x180E), 0x180F, 0x034F])


class InvalidName(ValueError):
    """A gesture name the service refuses; the message says why, without naming the field."""


def stored_form(raw: str) -> str:
    """A gesture name as stored and looked up: NFC, trimmed, without direction marks."""
    return unicodedata.normalize("NFC", raw).translate(DIRECTION_MARKS).strip()


def lookalike_key(name: str) -> str:
    """What a name looks like: two names with the same key would show the same to a user
    ("paper" and "paper" + U+FE0F, "✌" and "✌️", "ｐａｐｅｒ" and "paper"). Only width forms are
    folded, not every compatibility form: "①" and "1", "ℹ" and "i", "ㅎㅏ" and "하" look different."""
    text = stored_form(name).translate(_UNSEEN).strip()  # a space that hid before a selector
    folded = []
    for ch in text:
        tag, _, code = unicodedata.decomposition(ch).partition(" ")
        folded.append(chr(int(code, 16)) if tag in ("<wide>", "<narrow>") and " " not in code else ch)
    # Zero-width (non-)joiners between Latin letters or digits change nothing on screen (other
    # scripts, and emoji sequences, render them).
    kept = [ch for i, ch in enumerate(folded) if not (ch in ZERO_WIDTH_JOINERS and _latin_around(folded, i))]
    return unicodedata.normalize("NFC", "".join(kept))


def _latin_around(chars: list[str], i: int) -> bool:
    """Whether the run of zero-width joiners holding `chars[i]` lies between Latin letters or digits."""
    before, after = i - 1, i + 1
    while before >= 0 and chars[before] in ZERO_WIDTH_JOINERS:
        before -= 1
    while after < len(chars) and chars[after] in ZERO_WIDTH_JOINERS:
        after += 1
    return before >= 0 and after < len(chars) and _latin(chars[before]) and _latin(chars[after])


def _latin(ch: str) -> bool:
    return (ch.isascii() or "LATIN" in unicodedata.name(ch, "")) and ch.isalnum()


def lookalike_in(name: str, names: list[str]) -> str | None:
    """The first of `names` that looks the same as `name` (itself included), or None."""
    key = lookalike_key(name)
    return next((other for other in names if lookalike_key(other) == key), None)


def clean_gesture_name(raw: str) -> str:
    """The name as stored: NFC, trimmed, direction marks (which right-to-left keyboards add, and
    which show nothing) removed; `InvalidName` for anything that would make an unusable or
    look-alike name."""
    name = stored_form(raw)
    if not name:
        raise InvalidName("the name is empty")
    if len(name) > MAX_GESTURE_CHARS:
        # Normalization can lengthen a name (U+0958 is "क" plus a nukta sign once normalized).
        counted = "" if len(name) <= len(raw.strip()) else " once normalized (Unicode NFC)"
        raise InvalidName(f"{len(name)} characters{counted}, at most {MAX_GESTURE_CHARS} allowed")
    if all(unicodedata.category(ch) in INVISIBLE or ch in BLANK_LETTERS for ch in name):
        raise InvalidName("the name has no visible character")
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if ch in BLANK_LETTERS:
            raise InvalidName(
                f"U+{ord(ch):04X} shows as blank space and is not allowed in a name "
                "(it would make a name that looks like another one)"
            )
        if category in ("Cc", "Zl", "Zp"):
            raise InvalidName(f"control character U+{ord(ch):04X} is not allowed in a name")
        if category == "Cs":
            raise InvalidName(f"U+{ord(ch):04X} is half of a surrogate pair, not a character; send UTF-8 text")
        if category == "Cf" and not _allowed_format(name, i):
            raise InvalidName(
                f"invisible format character U+{ord(ch):04X} is not allowed in a name "
                "(it would make a name that looks like another one)"
            )
    if name[0] in ZERO_WIDTH_JOINERS or name[-1] in ZERO_WIDTH_JOINERS:
        raise InvalidName("a name cannot start or end with an invisible joiner")
    if name in (".", ".."):
        raise InvalidName(f"{name!r} cannot be used in the model's URLs; choose another name")
    return name


def _allowed_format(name: str, i: int) -> bool:
    """The invisible characters a name may hold: zero-width (non-)joiners, which some scripts and
    emoji sequences need, and the tag characters that follow a black flag (subdivision flags)."""
    if name[i] in ZERO_WIDTH_JOINERS:
        return True
    in_flag = i > 0 and (name[i - 1] == BLACK_FLAG or _is_tag(name[i - 1]))
    return _is_tag(name[i]) and in_flag


def _is_tag(ch: str) -> bool:
    return 0xE0020 <= ord(ch) <= 0xE007F
