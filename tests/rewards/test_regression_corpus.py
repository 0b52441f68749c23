"""Regression corpus of the answer verifier: (prediction, gold, expected) triples for every case of issue 10, false
positives included. Each triple is checked with the exact-match fast path on and off: the fast path may save work,
never change a verdict."""

import pytest

from ampo_trl.rewards import accuracy_reward, verify_answers

CORPUS = [
    # --- false positives: Math-Verify read a lower-case e as Euler's number -----------------------------------
    ("6.8e", "1.70e4", False),  # 1.70e4 was 1.7*e*4 = 6.8e
    ("e \\cdot 6.8", "1.70e4", False),
    ("e-3", "1e-3", False),  # 1e-3 was 1*e - 3
    ("e^{-3}", "1e-3", False),
    ("2e", "2e3", False),
    ("4.5e", "4.5e33", False),
    # --- false positives: absolute rounding of small numbers ---------------------------------------------------
    ("5.1\\times 10^{-24}", "4.6\\times 10^{-24}", False),
    ("5.1\\times 10^{-24}", "4.6e-24", False),
    ("5.1\\times 10^{-23}", "5.1\\times 10^{-24}", False),
    ("0.0000001", "0.0000002", False),
    ("0.0000004", "0.0000001", False),
    ("\\sqrt{2}\\cdot 10^{-20}", "\\sqrt{3}\\cdot 10^{-20}", False),  # exact but tiny: compared exactly
    # --- false positives: the same absolute rounding inside tuples, intervals, sets, matrices, equations -------
    ("(0.0000001, 2)", "(0.0000002, 2)", False),
    ("[0.0000001, 2]", "[0.0000002, 2]", False),
    ("\\{0.0000001, 2\\}", "\\{2, 0.0000002\\}", False),
    ("0.0000001, 2", "0.0000002, 2", False),
    ("x=0.0000001", "x=0.0000002", False),
    ("\\begin{pmatrix}0.0000001\\\\2\\end{pmatrix}", "\\begin{pmatrix}0.0000002\\\\2\\end{pmatrix}", False),
    ("(3.14, 2)", "(\\pi, 2)", False),
    # ... while equal containers still match
    ("(1,2)", "(1, 2)", True),
    ("\\{2, 1\\}", "\\{1, 2\\}", True),
    ("(3.14159265, 2)", "(\\pi, 2)", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2.0\\end{pmatrix}", True),
    ("(x, 2)", "(x, 2)", True),
    # --- false positives: a relative tolerance must not reach exact integers or rounded answers --------------
    ("1000001", "1000000", False),
    ("11111111101", "11,\\! 111,\\! 111,\\! 100", False),
    ("17012", "1.70e4", False),  # 7e-4 relative: a different number, not a representation
    ("2.998\\times 10^{8}", "3e8", False),
    ("0.3333", "\\frac{1}{3}", False),
    ("-1", "-1./3", False),  # "-1./3" was read as -1
    # --- false negatives: scientific notation --------------------------------------------------------------------
    ("1.70 \\times 10^{4}", "1.70e4", True),
    ("17000", "1.70e4", True),
    ("1.7E4", "1.70e4", True),
    ("1.7\\cdot 10^4", "1.70e4", True),
    ("17{,}000", "1.70e4", True),
    ("1.70e4", "17000", True),  # and the other way round
    ("0.001", "1e-3", True),
    ("10^{-3}", "1e-3", True),
    ("1 \\times 10^{-3}", "1e-3", True),
    ("4.6 \\times 10^{-24}", "4.6e-24", True),
    ("4.6\\times10^{-24}", "4.6e-24", True),
    ("-2.5 \\times 10^{-7}", "-2.5e-7", True),
    ("4.5 \\times 10^{33}", "4.5e33", True),
    ("4500000000000000000000000000000000", "4.5e33", True),
    ("17000.0000001", "1.70e4", True),  # float noise only
    ("100.0000004", "100", True),
    ("142", "142.0", True),
    ("3.14159265", "\\pi", True),
    # --- false negatives: currency, stray $ $, thousands separators -----------------------------------------
    ("36", "\\$36", True),
    ("\\$36", "36", True),
    ("\\$36", "\\$36", True),
    ("35", "\\$36", False),
    ("18.90", "\\$18.90", True),
    ("18.9", "\\$18.90", True),
    ("32348", "\\$32,\\!348", True),
    ("32,348", "\\$32,\\!348", True),
    ("\\$32{,}348", "32348", True),
    ("36", "$ $36", True),
    (
        "x_{0} \\cos (\\omega t)+\\dot{x}_{0} \\sin (\\omega t) / \\omega",
        "x_{0} \\cos (\\omega t)+$ $\\dot{x}_{0} \\sin (\\omega t) / \\omega",
        True,
    ),
    ("10080", "10,\\!080", True),
    ("58500", "58,500", True),
    ("11111111100", "11,\\! 111,\\! 111,\\! 100", True),
    ("1,234,567.5", "1234567.5", True),
    ("1, 234", "1234", False),  # a list, not a number
    ("1,2", "1.2", False),  # never a decimal comma
    # --- code-like golds -------------------------------------------------------------------------------------------
    ("-\\frac{1}{3}", "-1./3", True),
    ("\\arcsin(10/13)", "np.arcsin(10/13)", True),
    # --- Euler's number stays Euler's number -----------------------------------------------------------------
    ("e^{-3}", "\\frac{1}{e^{3}}", True),
    ("2e", "e+e", True),
    ("6.8e", "6.8e", True),
    # --- unchanged behaviour (symbolic answers still go to Math-Verify) -------------------------------------
    ("\\frac{1}{3}", "1/3", True),
    ("(0,1]", "(0, 1]", True),
    ("[0,1]", "(0, 1]", False),
    ("2,1,-1,-2", "-2,-1,1,2", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("62.5", "62.5", True),
]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "no fast path"])
def test_corpus(fast_path):
    predictions = [prediction for prediction, _, _ in CORPUS]
    golds = [gold for _, gold, _ in CORPUS]
    verdicts = verify_answers(predictions, golds, fast_path=fast_path)
    wrong = [(p, g, e) for (p, g, e), verdict in zip(CORPUS, verdicts) if verdict != e]
    assert not wrong, f"{len(wrong)} of {len(CORPUS)} triples get the wrong verdict: {wrong}"


def test_corpus_through_the_accuracy_reward_with_nested_tags():
    # The reward sees what a model writes: the answer inside (possibly doubled) tags.
    completions = [f"Reasoning.\n<answer><answer>{prediction}</answer></answer>" for prediction, _, _ in CORPUS]
    rewards = accuracy_reward(completions, answer=[gold for _, gold, _ in CORPUS])
    assert rewards == [1.0 if expected else 0.0 for _, _, expected in CORPUS]
