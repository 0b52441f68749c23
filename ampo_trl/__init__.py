"""ampo_trl: Adaptive Multi-Guidance Policy Optimization (AMPO, arXiv 2510.02227) for Hugging Face TRL.

`AMPOConfig` / `AMPOTrainer` are drop-in replacements for TRL's `GRPOConfig` / `GRPOTrainer`. Heavy modules
(torch, transformers, trl) are imported lazily so that light modules such as `ampo_trl.rewards` can be used
(e.g. in verifier worker processes) without paying for them.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

_LAZY_ATTRIBUTES = {
    "AMPOConfig": "ampo_trl.config",
    "AMPOTrainer": "ampo_trl.trainer",
    "build_tiny_model_and_tokenizer": "ampo_trl.demo.tiny",
    "save_tiny_model": "ampo_trl.demo.tiny",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name):
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(_LAZY_ATTRIBUTES[name])
        return getattr(module, name)
    raise AttributeError(f"module 'ampo_trl' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .config import AMPOConfig  # noqa: F401
    from .demo.tiny import build_tiny_model_and_tokenizer, save_tiny_model  # noqa: F401
    from .trainer import AMPOTrainer  # noqa: F401
