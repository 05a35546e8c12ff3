"""Hugging Face GPT-2 (LM head, tied) and BERT (sequence classification, pooler) from configs.

Random init, 2 layers, 64 wide, nothing downloaded; the model returns a ModelOutput whose .loss
the script backpropagates, and clips at 1.0 as HF's Trainer does. Optional: `pip install -e '.[compat]'`.
"""

import pytest

pytest.importorskip("transformers", reason="Hugging Face checks need the compat extra: pip install -e '.[compat]'")

from compat_harness import STRATEGIES, single_process_problems  # noqa: E402


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["hf_gpt2_lm", "hf_bert_classifier"])
def test_hugging_face_model_matches_single_process(compat, case, strategy):
    ranks = compat.ranks(strategy, case)
    assert single_process_problems(f"{case}/{strategy}", ranks, compat.reference(case)) == []
