"""`AMPOConfig`: `GRPOConfig` plus the switches of Adaptive Multi-Guidance Policy Optimization.

Defaults follow the paper (arXiv 2510.02227); every place where the authors' released code behaves differently is
an explicit switch whose help text says which value reproduces the released code. Inherited GRPO fields keep TRL's
defaults so that an `AMPOConfig` with `guidance_trigger="never"` trains exactly like a `GRPOConfig`; the paper's
values for those (lr 1e-6, `entropy_coef=0.001`, `loss_type="dapo"`, ...) are set in the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

GUIDANCE_TRIGGERS = ("all_fail", "always", "never", "hybrid", "adaptive_k", "every_group")
GUIDANCE_SELECTIONS = ("comprehension", "shortest", "random")
COMPREHENSION_MEANS = ("geometric", "arithmetic")
COMPREHENSION_BACKENDS = ("trainer", "vllm")
OFF_POLICY_AGGREGATIONS = ("sequence", "token", "constant")
LENGTH_GROUPINGS = ("guided", "always", "never")
COMPREHENSION_SEQUENCES = ("paper", "released")
COMPREHENSION_TIE_BREAKS = ("shortest", "quality_score")
TEACHER_ASSIGNMENTS = ("ranked", "released")


@dataclass
class AMPOConfig(GRPOConfig):
    r"""
    Configuration class for [`AMPOTrainer`]. Inherits every parameter of TRL's `GRPOConfig`.

    Parameters that control AMPO (paper defaults):

    > Data

        guidance_pool_column (`str`, defaults to `"teacher_solutions"`): dataset column holding each prompt's pool
            of teacher solutions (a list of `{"teacher": name, "text": solution}`; see `docs/data.md`).
        answer_column (`str`, defaults to `"answer"`): dataset column holding the ground-truth answer used by the
            comprehension score; when the dataset has no such column, the first column of
            `ampo_trl.answers.GOLD_ANSWER_COLUMNS` it has (e.g. `reward_model` of the authors' data). A dataset without
            the pool column trains as plain GRPO.

    > When to guide and how much

        guidance_trigger (`str`, defaults to `"all_fail"`): `"all_fail"` (paper): guide a group only when none of
            its completions is correct; `"always"`: replace failed rows in every group (the paper's "w/o adaptive"
            ablation); `"never"`: plain GRPO; `"hybrid"` (released code option): `"all_fail"` plus, with probability
            `hybrid_trigger_probability`, any group with a failed row; `"adaptive_k"` (this package's extension, not
            in the released code): guide groups where fewer than half the rows are correct and replace enough failed
            rows to approach a 1:1 mix;
            `"every_group"` (LUFFY-style baseline): replace `num_replacements` rows, correct or not, in every group.
        num_replacements (`int`, defaults to `2`): k, the number of failed rows replaced in a guided group
            (k' = min(k, pool size, failed rows)).
        hybrid_trigger_probability (`float`, defaults to `0.3`).
        correctness_reward (`str` or `None`, defaults to `None`): name of the reward function whose value decides
            whether a completion is correct (`None`: the first reward function).
        correctness_threshold (`float`, defaults to `1.0`): a completion is correct iff that reward >= threshold.

    > Which teacher solution

        guidance_selection (`str`, defaults to `"comprehension"`): `"comprehension"` (paper), `"shortest"`
            (r_length ablation) or `"random"` (r_random ablation).
        comprehension_mean (`str`, defaults to `"geometric"`): `"geometric"` (paper) or `"arithmetic"` (released
            code) mean of the student's probabilities of the ground-truth answer tokens.
        comprehension_format_weight (`float`, defaults to `0.0`): w in `(1 - w)·score + w·fmt(teacher text)`;
            the released code uses 0.1.
        comprehension_round_to_bf16 (`bool`, defaults to `False`): round scores to bfloat16 before ranking
            (released code).
        comprehension_sequence (`str`, defaults to `"paper"`): how the scored text is built: `"paper"` (the teacher
            text cut at its last `<answer>`, then `<answer>` + gold + `</answer>` + EOS, pieces tokenized apart) or
            `"released"` (`workers/reward_manager/prob.py` of the authors' code: exactly one `<answer>` required, its
            whitespace kept, a space after the gold, one joint tokenization, the gold tokens found by offsets).
        comprehension_tie_break (`str`, defaults to `"shortest"`): equal scores go to the shorter solution, or
            (`"quality_score"`, released code) to the higher `quality_score` of the pool entry.
        teacher_assignment (`str`, defaults to `"ranked"`): replaced rows, in ascending order, get the ranked
            solutions best first; `"released"`: each takes the `j mod (remaining)`-th remaining one (`j` = its row in
            the group), as the authors' `mix_dapo_trainer.py` does.
        comprehension_token_budget (`int`, defaults to `32768`): maximum padded tokens (rows × length) in one
            comprehension-scoring forward pass.
        comprehension_backend (`str`, defaults to `"trainer"`): `"trainer"` (no-grad policy forward passes, sharded
            over processes) or `"vllm"` (prompt log-probs from TRL's vLLM engine: the server, asked by the main
            process then broadcast, or the colocated engines, sharded). Scores are at temperature 1 on both.
        comprehension_vllm_chunk_size (`int`, defaults to `8`): sequences per vLLM scoring request.
        comprehension_vllm_max_concurrent_requests (`int`, defaults to `4`): scoring requests in flight (server).
        comprehension_max_length (`int` or `None`, defaults to `None`): longest scoring sequence vLLM accepts
            (None: read `max_model_len` from the engine); longer candidates are skipped and counted.
        max_teacher_length (`int` or `None`, defaults to `None` = `max_completion_length`): teacher solutions
            longer than this many tokens (EOS included) are skipped and counted, never truncated.

    > Training on teacher rows

        shaping_gamma (`float`, defaults to `0.1`): γ of the policy-shaping function f(p) = p / (p + γ).
        off_policy_aggregation (`str`, defaults to `"sequence"`): `"sequence"` (paper): each teacher sequence
            contributes the token-mean of its loss; `"token"` (LUFFY / released code): teacher tokens are averaged
            together with on-policy tokens; `"constant"` (released code, with `loss_type="dr_grpo"`): summed and
            divided by rows × max_completion_length.
        length_grouping (`str`, defaults to `"guided"`): how a process's generation batch is cut into micro-batches
            for the loss. `"guided"`: a batch with teacher rows is regrouped by completion length and each
            micro-batch cut to its longest row (same loss; long teacher rows stop widening every micro-batch); other
            batches are exactly TRL's. `"always"`: every batch, plain GRPO ones too. `"never"`: TRL's micro-batches.
        require_verified_teachers (`bool`, defaults to `True`): a teacher solution enters a batch only if the
            correctness reward accepts it (each solution is scored once and remembered; skips are counted in
            `ampo/skipped_unverified`). `False` uses every solution (the released code, with `teacher_reward_floor`).
        entropy_on_teacher_tokens (`bool`, defaults to `False`): include teacher tokens in the entropy bonus (the
            released code does; the paper leaves the teacher's tokens out of exploration terms).
        released_loss_scale (`bool`, defaults to `False`): scale the policy terms as the released code does (a sum
            over a micro-batch's rows, = rows x TRL's `dr_grpo`); needs `off_policy_aggregation="constant"` and
            `loss_type="dr_grpo"`.
        teacher_reward_floor (`float` or `None`, defaults to `None`): teacher rows are always re-scored with the
            reward functions; if set, a teacher row whose weighted total reward is lower is raised to this value
            (the released code uses 1.0).
    """

    guidance_pool_column: str = field(
        default="teacher_solutions",
        metadata={
            "help": "Dataset column holding each prompt's pool of teacher solutions: a list of "
            "{'teacher': name, 'text': solution} entries (see docs/data.md). A training dataset without this column "
            "trains as plain GRPO (one warning says so)."
        },
    )
    answer_column: str = field(
        default="answer",
        metadata={
            "help": "Dataset column holding the ground-truth answer used by the comprehension score. When the dataset "
            "has no such column, the first gold column it has is used (answer, solution, reward_model, ground_truth, "
            "final_answer)."
        },
    )
    guidance_trigger: str = field(
        default="all_fail",
        metadata={
            "help": "When a group gets teacher guidance. 'all_fail' (paper): no completion of the group is correct. "
            "'always': replace failed rows in every group (the paper's 'w/o adaptive' ablation). 'never': plain GRPO. "
            "'hybrid' (released code option): 'all_fail' plus, with probability hybrid_trigger_probability, any "
            "group with a failed row. 'adaptive_k' (this package's extension; not in the released code): groups where "
            "fewer than half the rows "
            "are correct, replacing enough failed rows to approach a 1:1 correct/incorrect mix. 'every_group' "
            "(LUFFY-style baseline): replace num_replacements rows, correct or not, in every group.",
            "choices": list(GUIDANCE_TRIGGERS),
        },
    )
    num_replacements: int = field(
        default=2,
        metadata={
            "help": "k: number of failed completions replaced by teacher solutions in a guided group (paper: 2). "
            "The actual number is min(k, usable pool size, failed rows). Ignored by guidance_trigger='adaptive_k'."
        },
    )
    hybrid_trigger_probability: float = field(
        default=0.3,
        metadata={"help": "Probability of guiding a group that has a failed row, for guidance_trigger='hybrid'."},
    )
    correctness_reward: str | None = field(
        default=None,
        metadata={
            "help": "Name of the reward function (its __name__) that decides whether a completion is correct. None: "
            "the first reward function. Paper: the accuracy reward, formatting ignored."
        },
    )
    correctness_threshold: float = field(
        default=1.0,
        metadata={
            "help": "A completion is correct iff the correctness reward is >= this value. Paper: accuracy == 1. "
            "With the single composite ampo_reward (0.9*acc + 0.1*fmt) use 0.9."
        },
    )
    guidance_selection: str = field(
        default="comprehension",
        metadata={
            "help": "How the teacher solutions of a guided group are chosen. 'comprehension' (paper): highest "
            "student probability of the ground-truth answer after the teacher's reasoning, shorter wins ties. "
            "'shortest' (r_length ablation). 'random' (r_random ablation).",
            "choices": list(GUIDANCE_SELECTIONS),
        },
    )
    comprehension_mean: str = field(
        default="geometric",
        metadata={
            "help": "Mean of the student's probabilities of the ground-truth answer tokens. 'geometric' (paper): "
            "exp(mean log p). 'arithmetic' (released code): mean p.",
            "choices": list(COMPREHENSION_MEANS),
        },
    )
    comprehension_format_weight: float = field(
        default=0.0,
        metadata={
            "help": "w in (1 - w) * score + w * format(teacher text). Paper: 0. Released code: 0.1.",
        },
    )
    comprehension_round_to_bf16: bool = field(
        default=False,
        metadata={"help": "Round comprehension scores to bfloat16 before ranking, as the released code does."},
    )
    comprehension_sequence: str = field(
        default="paper",
        metadata={
            "help": "How the comprehension score's text is built. 'paper': the teacher text cut at its last "
            "<answer>, then '<answer>' + gold + '</answer>' + EOS, the pieces tokenized apart so the gold span is "
            "exact. 'released' (the authors' workers/reward_manager/prob.py): the text must hold exactly one "
            "<answer> (else score 0), the whitespace after it is kept (else one space), a space follows the gold, "
            "'</answer>' and the EOS string close it, the whole is tokenized at once and the gold tokens are those "
            "whose characters overlap the gold.",
            "choices": list(COMPREHENSION_SEQUENCES),
        },
    )
    comprehension_tie_break: str = field(
        default="shortest",
        metadata={
            "help": "Which of two equally scored solutions ranks first. 'shortest': the shorter one (in student "
            "tokens). 'quality_score' (released code: its pool is pre-sorted by quality_score and the sort by score "
            "keeps that order): the higher quality_score of the pool entry.",
            "choices": list(COMPREHENSION_TIE_BREAKS),
        },
    )
    teacher_assignment: str = field(
        default="ranked",
        metadata={
            "help": "Which chosen solution goes to which replaced row. 'ranked': rows in ascending order get the "
            "solutions best first. 'released' (the authors' mix_dapo_trainer.py): rows in ascending order each take "
            "the (j mod remaining)-th of the remaining chosen solutions, j being the row's index in its group.",
            "choices": list(TEACHER_ASSIGNMENTS),
        },
    )
    comprehension_token_budget: int = field(
        default=32768,
        metadata={
            "help": "Maximum number of padded tokens (rows x length) in one comprehension-scoring forward pass. "
            "Bounds the memory of scoring; more candidates mean more forward passes, never bigger ones."
        },
    )
    comprehension_backend: str = field(
        default="trainer",
        metadata={
            "help": "Where comprehension scores are computed. 'trainer': no-grad forward passes of the policy, "
            "sharded over processes. 'vllm': prompt log-probs from TRL's vLLM engine (use_vllm=True): in server mode "
            "the main process asks the server and broadcasts; in colocate mode each engine scores a share. No "
            "training forward runs for scoring. Both backends score at temperature 1 (vLLM cannot apply a "
            "temperature to prompt log-probs; see docs/algorithm.md).",
            "choices": list(COMPREHENSION_BACKENDS),
        },
    )
    comprehension_vllm_chunk_size: int = field(
        default=8,
        metadata={
            "help": "comprehension_backend='vllm': scoring sequences per request (bounds the memory of one request; "
            "vLLM computes prompt log-probs of every position of every sequence in it)."
        },
    )
    comprehension_vllm_max_concurrent_requests: int = field(
        default=4,
        metadata={"help": "comprehension_backend='vllm' in server mode: scoring requests in flight at once."},
    )
    comprehension_max_length: int | None = field(
        default=None,
        metadata={
            "help": "comprehension_backend='vllm': the longest scoring sequence (prompt + teacher reasoning + gold "
            "answer) vLLM accepts is max_model_len - 1 tokens. None: read max_model_len from the engine (the server's "
            "GET /v1/models, or the colocated engine). Longer candidates are not sent: they score 0 and are counted "
            "in ampo/skipped_scoring_too_long."
        },
    )
    max_teacher_length: int | None = field(
        default=None,
        metadata={
            "help": "Teacher solutions longer than this many tokens (EOS included) are skipped and counted in "
            "ampo/skipped_too_long, never truncated. None: max_completion_length."
        },
    )
    shaping_gamma: float = field(
        default=0.1,
        metadata={"help": "gamma of the policy-shaping function f(p) = p / (p + gamma) applied to teacher tokens."},
    )
    off_policy_aggregation: str = field(
        default="sequence",
        metadata={
            "help": "How teacher-token losses are aggregated. 'sequence' (paper): each teacher sequence contributes "
            "the token-mean of its loss, weighted like one row of the batch. 'token' (LUFFY / released code): teacher "
            "tokens join the on-policy tokens in one token-level mean. 'constant' (released code, with "
            "loss_type='dr_grpo'): teacher-token losses are summed and divided by rows x max_completion_length.",
            "choices": list(OFF_POLICY_AGGREGATIONS),
        },
    )
    length_grouping: str = field(
        default="guided",
        metadata={
            "help": "How each process's generation batch is cut into micro-batches for the loss. 'guided': when the "
            "batch holds teacher rows, rows are grouped by completion length and each micro-batch is cut to its "
            "longest row, so long teacher rows stop widening every micro-batch (the loss is unchanged; see "
            "ampo_trl.micro_batches); batches without teacher rows are exactly TRL's. 'always': the same for every "
            "batch, plain GRPO ones too. 'never': TRL's shuffled micro-batches, padded to the batch's widest row.",
            "choices": list(LENGTH_GROUPINGS),
        },
    )
    require_verified_teachers: bool = field(
        default=True,
        metadata={
            "help": "A teacher solution enters a batch only if the correctness reward accepts it "
            "(correctness_reward >= correctness_threshold), as the paper's pool holds verified solutions only: an "
            "unverified one would get a low advantage and the shaping loss would push its text down. Each solution "
            "is scored once (remembered by prompt, answer and text) and skips are counted in ampo/skipped_unverified. "
            "False: every solution is used (the released code, which forces teacher rewards to 1.0 with "
            "teacher_reward_floor=1.0)."
        },
    )
    entropy_on_teacher_tokens: bool = field(
        default=False,
        metadata={
            "help": "Include teacher tokens in the entropy bonus (entropy_coef): one token mean over on-policy and "
            "teacher tokens, as the released code does. Default: the bonus acts on the student's own tokens only. "
            "Needs a fixed entropy_coef (use_adaptive_entropy=False) and top_entropy_quantile=1."
        },
    )
    released_loss_scale: bool = field(
        default=False,
        metadata={
            "help": "Scale the policy terms as the released code does: per micro-batch, the token-loss sum over its "
            "rows / max_completion_length / micro-batches per optimizer step, i.e. rows x TRL's dr_grpo (the "
            "entropy bonus stays a token mean). Matters with gradient clipping. Needs off_policy_aggregation="
            "'constant' and loss_type='dr_grpo'."
        },
    )
    teacher_reward_floor: float | None = field(
        default=None,
        metadata={
            "help": "Teacher rows are re-scored with the reward functions. If set, a teacher row whose weighted total "
            "reward is lower than this value is raised to it (the released code uses 1.0). None: keep the re-scored "
            "reward (paper: pool solutions are verified correct)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._check_choice("guidance_trigger", GUIDANCE_TRIGGERS)
        self._check_choice("guidance_selection", GUIDANCE_SELECTIONS)
        self._check_choice("comprehension_mean", COMPREHENSION_MEANS)
        self._check_choice("off_policy_aggregation", OFF_POLICY_AGGREGATIONS)
        self._check_choice("comprehension_backend", COMPREHENSION_BACKENDS)
        self._check_choice("length_grouping", LENGTH_GROUPINGS)
        self._check_choice("comprehension_sequence", COMPREHENSION_SEQUENCES)
        self._check_choice("comprehension_tie_break", COMPREHENSION_TIE_BREAKS)
        self._check_choice("teacher_assignment", TEACHER_ASSIGNMENTS)
        if self.off_policy_aggregation == "constant" and self.loss_type != "dr_grpo":
            raise ValueError(
                "off_policy_aggregation='constant' divides by a constant length as loss_type='dr_grpo' does for the "
                f"on-policy term; with loss_type={self.loss_type!r} the two terms would be on different scales. Set "
                "loss_type='dr_grpo' or choose off_policy_aggregation 'sequence' or 'token'."
            )
        if self.released_loss_scale and self.off_policy_aggregation != "constant":
            raise ValueError(
                "released_loss_scale reproduces the released code's Dr.GRPO sum; it needs "
                "off_policy_aggregation='constant' and loss_type='dr_grpo'."
            )
        for switch in ("entropy_on_teacher_tokens", "released_loss_scale"):
            if getattr(self, switch) and (self.use_adaptive_entropy or self.top_entropy_quantile < 1.0):
                raise ValueError(
                    f"{switch} rewrites a fixed entropy bonus, as the released code has; it does not combine with "
                    "use_adaptive_entropy=True or top_entropy_quantile < 1. Turn those off or drop the switch."
                )
        if self.guidance_trigger == "never":
            return
        if self.num_replacements < 1:
            raise ValueError(
                f"num_replacements must be >= 1, got {self.num_replacements}. To train without guidance set "
                "guidance_trigger='never'."
            )
        if self.num_replacements >= self.num_generations:
            raise ValueError(
                f"num_replacements ({self.num_replacements}) must be smaller than num_generations "
                f"({self.num_generations}) so that every guided group keeps on-policy rows. Lower num_replacements "
                "or raise num_generations."
            )
        if not 0.0 <= self.hybrid_trigger_probability <= 1.0:
            raise ValueError(f"hybrid_trigger_probability must be in [0, 1], got {self.hybrid_trigger_probability}.")
        if not 0.0 <= self.comprehension_format_weight <= 1.0:
            raise ValueError(
                f"comprehension_format_weight must be in [0, 1], got {self.comprehension_format_weight} "
                "(paper: 0.0, released code: 0.1)."
            )
        if self.shaping_gamma <= 0:
            raise ValueError(f"shaping_gamma must be > 0, got {self.shaping_gamma} (paper: 0.1).")
        if self.comprehension_token_budget < 1:
            raise ValueError(f"comprehension_token_budget must be >= 1, got {self.comprehension_token_budget}.")
        if self.max_teacher_length is not None and self.max_teacher_length < 1:
            raise ValueError(
                f"max_teacher_length must be >= 1 or None (= max_completion_length), got {self.max_teacher_length}."
            )
        if self.teacher_reward_floor is not None and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "teacher_reward_floor raises the weighted *total* reward of teacher rows, which only exists with "
                "multi_objective_aggregation='sum_then_normalize'. Set teacher_reward_floor=None or use "
                "multi_objective_aggregation='sum_then_normalize'."
            )
        if self.comprehension_backend == "vllm" and not self.use_vllm:
            raise ValueError(
                "comprehension_backend='vllm' scores with TRL's vLLM engine, which needs use_vllm=True. Use "
                "comprehension_backend='trainer' otherwise."
            )
        if self.comprehension_vllm_chunk_size < 1 or self.comprehension_vllm_max_concurrent_requests < 1:
            raise ValueError(
                "comprehension_vllm_chunk_size and comprehension_vllm_max_concurrent_requests must be >= 1, got "
                f"{self.comprehension_vllm_chunk_size} and {self.comprehension_vllm_max_concurrent_requests}."
            )
        if self.comprehension_max_length is not None and self.comprehension_max_length < 2:
            raise ValueError(
                f"comprehension_max_length must be >= 2 or None (read from the engine), got "
                f"{self.comprehension_max_length}."
            )
        if self.guidance_trigger == "hybrid" and self.hybrid_trigger_probability == 0.0:
            raise ValueError(
                "guidance_trigger='hybrid' with hybrid_trigger_probability=0 is 'all_fail'; set "
                "guidance_trigger='all_fail' or a probability > 0."
            )

    @property
    def effective_max_teacher_length(self) -> int:
        """Longest accepted teacher solution in tokens (EOS included)."""
        return self.max_teacher_length if self.max_teacher_length is not None else self.max_completion_length

    def _check_choice(self, name: str, choices: tuple[str, ...]):
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
