r"""Cheap canonical forms of answer strings, tried before Math-Verify (the exact-match fast path).

Two answers whose canonical forms are equal are the same answer: the form only removes what never carries meaning
(math delimiters wrapping the whole string, ``\left``/``\right``, thin spaces, ``\dfrac``/``\tfrac``, text
wrappers such as ``\text{...}``, whitespace that does not separate two digits, a final period).
"""

from __future__ import annotations

import re

from ..answers import extract_boxed

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_THIN_SPACES = re.compile(r"\\[!,;:]|\\ ")
_DISPLAY_FRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_WHITESPACE_RUN = re.compile(r"\s+")


def strip_math_delimiters(text: str) -> str:
    """Remove delimiters that wrap the whole string: ``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]``."""
    text = text.strip()
    while True:
        if len(text) >= 2 and text.startswith("$") and text.endswith("$") and "$" not in text[1:-1].strip("$"):
            text = text.strip("$").strip()
        elif text.startswith("\\(") and text.endswith("\\)") or text.startswith("\\[") and text.endswith("\\]"):
            text = text[2:-2].strip()
        else:
            return text


def exact_match_form(text: str) -> str:
    """A conservative canonical form: two answers with equal forms are the same answer."""
    text = strip_math_delimiters(text)
    if text.startswith(("\\boxed", "\\fbox")):
        boxed = extract_boxed(text)
        if boxed is not None and re.fullmatch(r"\\(?:boxed|fbox)\s*\{.*\}", text, flags=re.DOTALL):
            text = boxed
    text = _LEFT_RIGHT.sub("", text)
    text = _THIN_SPACES.sub("", text)
    text = _DISPLAY_FRAC.sub(r"\\frac", text)
    previous = None
    while previous != text:  # nested wrappers: \text{\textbf{x}}
        previous = text
        text = _TEXT_WRAPPER.sub(r"\1", text)
    # Whitespace between two digits is kept ("1 2" is not "12"); elsewhere it carries no meaning.
    text = _WHITESPACE_RUN.sub(
        lambda match: (
            " "
            if match.start() > 0
            and match.end() < len(match.string)
            and match.string[match.start() - 1].isdigit()
            and match.string[match.end()].isdigit()
            else ""
        ),
        text,
    )
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    return text


def is_exact_match(prediction: str, gold: str) -> bool:
    normalized_prediction = exact_match_form(prediction)
    return bool(normalized_prediction) and normalized_prediction == exact_match_form(gold)
