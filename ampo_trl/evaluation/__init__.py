r"""Evaluation with the AMPO paper's protocol (arXiv 2510.02227, section 4.1 and appendix).

Pipeline: load benchmark files -> group repeated rows by problem -> build chat prompts with the evaluation system
prompt -> sample completions with a backend of :mod:`ampo_trl.generation` (vLLM on GPU, transformers ``generate``
anywhere; shared with the pool builder) -> score them with the project's rewards (:mod:`ampo_trl.rewards`) ->
metrics -> reports (JSON, Markdown, JSONL, PNG).

Protocol defaults (paper): temperature 0.6, top_p 1.0, at most 8192 new tokens, and the system prompt
`ampo_trl.answers.SYSTEM_PROMPT` *replacing* any system message stored in the benchmark rows.

Scoring
    * math sets: ``a = extract_answer(response)`` (the last ``<answer>...</answer>``, else the last ``\boxed{}``),
      correct iff Math-Verify says ``a == gold`` (:func:`ampo_trl.rewards.verify_answers`, hard time limit per item;
      a time-out counts as wrong and is reported);
    * multiple-choice sets (ARC-c, GPQA-diamond, MMLU-Pro; letters A-J): correct iff the option letter of ``a``
      equals the gold letter (:func:`ampo_trl.rewards.multiple_choice_reward`);
    * format compliance: :func:`ampo_trl.rewards.format_reward` (exactly one ``<answer>`` before exactly one
      ``</answer>``).

Problems and samples
    A benchmark row repeated r times (the authors' avg@32 convention: AIME/AMC rows appear 32 times in
    ``math6_eval.parquet``) is one problem. With ``num_samples = m`` per row, the problem gets
    ``n_i = m * r`` samples (``expand_repeats=True``, default: exactly what the authors' evaluation does) or
    ``n_i = m`` (``expand_repeats=False``).

Metrics (per benchmark with P problems; problem i has n_i samples, c_i of them correct)
    * accuracy, "avg@n":      acc = (1/P) * sum_i c_i / n_i        (equal to the unbiased pass@1)
    * pass@k (unbiased, Chen et al. 2021), defined for k <= min_i n_i:
          pass@k = (1/P) * sum_i [ 1 - C(n_i - c_i, k) / C(n_i, k) ]
      computed exactly in integer arithmetic as ``1 - prod_{j=n-c+1}^{n} (j-k) / prod_{j=n-c+1}^{n} j`` (the same
      ratio, 1 when n - c < k) and rounded to float once, so no float binomial ever overflows (C(256, 128) ~ 1e75)
      and small cases are exact (n=5, c=2: pass@1 = 0.4, pass@2 = 0.7);
    * mean response length: mean over all samples of the number of generated tokens (the final EOS included);
    * format rate, answer rate (an answer could be extracted), truncation rate (hit ``max_new_tokens``):
      fractions of samples.
    All rates and accuracies are fractions in [0, 1] in the JSON and in logged metrics; the Markdown tables show
    percentages. Group scores follow Table 1: the *unweighted* mean of the benchmark accuracies over the
    in-distribution math group (AIME24, AIME25, AMC, MATH-500, Minerva, OlympiadBench) and over the
    out-of-distribution group (ARC-c, GPQA-diamond, MMLU-Pro); a group with missing benchmarks is marked incomplete.

Nothing is dropped silently: rows that cannot be used (no prompt, no gold answer, ...) are counted per reason and
reported in the results.

Modules: `benchmarks` (registry and names), `loading`, `metrics`, `runner` (`evaluate`), `reports`, `callback`
(`AMPOEvalCallback`, evaluation during training).
"""

from .benchmarks import BENCHMARKS, GROUPS, MATH, MULTIPLE_CHOICE, BenchmarkSpec, canonical_benchmark
from .callback import AMPOEvalCallback
from .loading import (
    BENCHMARK_DIR_ENV_VAR,
    BENCHMARK_FILE_ALIASES,
    BenchmarkSet,
    Problem,
    load_benchmark,
    load_benchmarks,
    resolve_benchmark_path,
)
from .metrics import benchmark_metrics, default_k_values, group_metrics, mean_pass_at_k, pass_at_k
from .reports import (
    load_results,
    plot_pass_at_k,
    render_compare_markdown,
    render_results_markdown,
    render_table1_markdown,
    write_generations_jsonl,
    write_report,
)
from .runner import EvalSettings, EvaluationOutput, build_messages, compute_results, evaluate, score_responses

__all__ = [
    "AMPOEvalCallback",
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV_VAR",
    "BENCHMARK_FILE_ALIASES",
    "BenchmarkSet",
    "BenchmarkSpec",
    "EvalSettings",
    "EvaluationOutput",
    "GROUPS",
    "MATH",
    "MULTIPLE_CHOICE",
    "Problem",
    "benchmark_metrics",
    "build_messages",
    "canonical_benchmark",
    "compute_results",
    "default_k_values",
    "evaluate",
    "group_metrics",
    "load_benchmark",
    "load_benchmarks",
    "load_results",
    "mean_pass_at_k",
    "pass_at_k",
    "plot_pass_at_k",
    "render_compare_markdown",
    "render_results_markdown",
    "render_table1_markdown",
    "resolve_benchmark_path",
    "score_responses",
    "write_generations_jsonl",
    "write_report",
]
