r"""Answer strings before verification: the normalisation of golds and predictions, and the exact-match fast path.

**Normalisation** (`normalize_answer`), applied to the gold and the prediction alike, before the fast path and
before Math-Verify. It only rewrites notations whose meaning is unambiguous but which Math-Verify misreads:

1. **Currency**: an escaped dollar ``\$`` is deleted (``\$36`` -> ``36``): it is never a math delimiter.
2. **Stray ``$ $``**: empty math pairs are deleted when no other ``$`` is left (``x+$ $y`` -> ``x+ y``); when the
   number of ``$`` is odd, the first ``$`` before a number is a currency sign and is deleted (``$36`` -> ``36``).
3. **Thousands separators**: ``,\!``, ``{,}``, ``\,``, ``,\,`` and ``\ `` between a digit and a group of exactly three
   digits are deleted (``32,\!348`` -> ``32348``); a plain comma only when the whole answer is such a number
   (``32,348``, ``1,234,567.5``; latex2sympy's own rule) and the gold is not a list (``plain_commas``), so
   ``1, 234``, ``1,2`` and ``(2,251,252)`` stay lists.
4. **Scientific notation**: ``1.70e4``, ``4.5E33``, ``1e-3`` -> ``1.70\times 10^{4}`` ... (mantissa kept verbatim:
   its digits are the significant figures), and ``\cdot 10^`` / ``×10^`` / ``*10^`` after a digit -> ``\times 10^``.
   Math-Verify reads a lower-case ``e`` as Euler's number (``1.70e4`` = 1.7·e·4). An unsigned exponent is converted
   wherever the token is not part of a name (``x2e3`` stays); a signed one (``1e-3``) only as a standalone token
   (start, space, ``( [ , = $`` before it, a sign allowed; end, space, ``) ] , $ \`` after it), because ``2e-3``
   inside an expression may mean 2e − 3. Euler expressions are never turned into numbers: ``e``, ``2e``, ``6.8e``,
   ``e-3``, ``2e - 1``, ``e^{-3}``, ``\frac{1}{2e-3}`` are unchanged. Known ambiguity: a lone ``2e-1`` is read as
   0.2.
5. **Code-like numbers**: a decimal point before an operator is dropped (``-1./3`` -> ``-1/3``; Math-Verify read it
   as -1), and numpy names become LaTeX (``np.arcsin(10/13)`` -> ``\arcsin(10/13)``, ``np.log`` -> ``\ln``).

**Fast path** (`exact_match_form`, `is_exact_match`): two normalised answers whose canonical forms are equal are the
same answer. The form only removes what never carries meaning (math delimiters wrapping the whole string,
``\left``/``\right``, thin spaces, ``\dfrac``/``\tfrac``, text wrappers such as ``\text{...}``, whitespace that
does not separate two digits, a final period).
"""

from __future__ import annotations

import re

from ..answers import extract_boxed

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_THIN_SPACES = re.compile(r"\\[!,;:]|\\ ")
_DISPLAY_FRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_WHITESPACE_RUN = re.compile(r"\s+")

_ESCAPED_DOLLAR = re.compile(r"\\\$")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_EMPTY_MATH = re.compile(r"(?<!\\)\$\s*(?<!\\)\$")
_CURRENCY_DOLLAR = re.compile(r"(?<!\\)\$(?=\s*-?\d)")
_EMPTY_TEXT = re.compile(r"\\text\s*\{\s*\}")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!\s*|\{,\}|,\\,|\\,|,\\ |\\ )(?=\d{3}(?!\d))")
_PLAIN_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MANTISSA = r"(?P<mantissa>\d+\.\d*|\.\d+|\d+)"
# 1.70e4, 4.5E33: an unsigned exponent is never a sensible Euler product; anywhere the token is not part of a name.
_E_NOTATION_UNSIGNED = re.compile(rf"(?<![A-Za-z0-9_.\\]){_MANTISSA}[eE](?P<exponent>\d+)(?![A-Za-z0-9_]|\.\d)")
# 1e-3, 2.5E+7: only a standalone token ("2e-3" inside an expression may mean 2e - 3).
_E_NOTATION_SIGNED = re.compile(
    rf"(?:^|(?<=[\s(\[,=$]))(?P<sign>[-+]?){_MANTISSA}[eE](?P<exponent>[+-]\d+)(?=$|\.$|[\s)\],;$\\])"
)
# "-1./3" (a trailing decimal point before an operator): Math-Verify reads it as -1.
_TRAILING_POINT = re.compile(r"(?<=\d)\.(?=\s*[/*^)\]])")
# Code-like golds (Minerva: np.arcsin(10/13)): numpy names -> LaTeX commands.
_NUMPY_NAME = re.compile(r"\bnp\.(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|exp|log|sqrt|pi)\b")
_NUMPY_TO_LATEX = {"log": "ln"}
_TIMES_TEN = re.compile(r"(?<=\d)\s*(?:\\cdot|\\times|\u00d7|\*)\s*10\s*\^")


def _scientific(match: re.Match) -> str:
    mantissa = match["mantissa"].rstrip(".") if match["mantissa"].endswith(".") else match["mantissa"]
    if mantissa.startswith("."):
        mantissa = "0" + mantissa
    sign = match.groupdict().get("sign") or ""
    return f"{sign}{mantissa}\\times 10^{{{int(match['exponent'])}}}"


def _strip_currency_and_separators(text: str, plain_commas: bool) -> str:
    text = _ESCAPED_DOLLAR.sub("", text)
    text = _EMPTY_TEXT.sub("", text)
    without_empty_math = _EMPTY_MATH.sub(" ", text)
    if not _UNESCAPED_DOLLAR.search(without_empty_math):  # "$ $36", "a+$ $b": empty pairs and nothing else
        text = without_empty_math
    if len(_UNESCAPED_DOLLAR.findall(text)) % 2 == 1:  # odd: one of them is a currency sign before a number
        text = _CURRENCY_DOLLAR.sub("", text, count=1)
    text = _LATEX_THOUSANDS.sub("", text)
    core = strip_math_delimiters(text)
    if plain_commas and _PLAIN_THOUSANDS_NUMBER.fullmatch(core):
        text = core.replace(",", "")
    return text.strip()


def normalize_answer(text: str, *, plain_commas: bool = True) -> str:
    """The answer with currency signs, stray ``$ $``, thousands separators and scientific notation rewritten (see
    the module docstring). ``plain_commas=False`` keeps ``32,348`` as written: pass it for a prediction whose gold
    is a list (`is_list_answer`). Idempotent: the rules are applied until nothing changes, because one rule can
    expose work for another (``$$$1``: the currency ``$`` goes first, then the empty pair ``$$``)."""
    for _ in range(_MAX_NORMALIZATION_PASSES):
        previous, text = text, _normalize_once(text, plain_commas)
        if text == previous:
            break
    return text


# Every rule only deletes characters or rewrites a notation into a fixed point of itself, so a few passes suffice;
# the bound keeps a pathological input from looping.
_MAX_NORMALIZATION_PASSES = 8


def _normalize_once(text: str, plain_commas: bool) -> str:
    text = _strip_currency_and_separators(text, plain_commas)
    text = _TRAILING_POINT.sub("", text)
    text = _NUMPY_NAME.sub(lambda match: "\\" + _NUMPY_TO_LATEX.get(match[1], match[1]), text)
    text = _E_NOTATION_UNSIGNED.sub(_scientific, text)
    text = _E_NOTATION_SIGNED.sub(_scientific, text)
    return _TIMES_TEN.sub(r"\\times 10^", text)


def is_list_answer(normalized_gold: str) -> bool:
    """Whether a normalised gold may be a list, tuple or interval (it has a comma left after normalisation)."""
    return "," in normalized_gold


def normalize_pair(prediction: str, gold: str) -> tuple[str, str]:
    """``(prediction, gold)`` normalised together: plain thousands commas of the prediction are removed only when
    the gold is not a list."""
    normalized_gold = normalize_answer(gold)
    return normalize_answer(prediction, plain_commas=not is_list_answer(normalized_gold)), normalized_gold


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
    """Equal canonical forms (`exact_match_form`) of two answers, without normalising them first."""
    normalized_prediction = exact_match_form(prediction)
    return bool(normalized_prediction) and normalized_prediction == exact_match_form(gold)
