"""Who may own jobs: the one rule for a subject (an owner id).

A subject becomes `owner_id` in rows, index keys, rate limit keys and
`owner=` filters, whether it comes from a JWT's `sub` (`web/auth.py`) or
from an API key's owner (`daemon/api_keys.py`), so every later use can rely
on 1-255 characters of text without control characters.
"""

from __future__ import annotations

import unicodedata

# The longest subject (characters): owner= filters accept the same, and at 4
# bytes a character its index key stays far below btree's 2704-byte limit.
MAX_SUBJECT = 255
# Unicode categories a subject may not contain: control characters (NUL
# included) and surrogates (a lone "\ud800" is not text; PostgreSQL refuses it).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})


def has_refused_characters(text: str) -> bool:
    """True when `text` holds a control character or a lone surrogate."""
    return any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text)


def subject_problem(subject: object) -> str | None:
    """Why `subject` cannot own jobs ("must be a non-empty string", …), or None."""
    if not isinstance(subject, str) or not subject:
        return "must be a non-empty string"
    if len(subject) > MAX_SUBJECT:
        return f"may be at most {MAX_SUBJECT} characters"
    if has_refused_characters(subject):
        return "must not contain control characters or lone surrogates"
    return None
