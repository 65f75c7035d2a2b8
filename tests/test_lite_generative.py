"""The generative baseline of the latency benchmark: prompts, a few SFT steps, beam search to top-k item ids."""

from __future__ import annotations

from lite_helpers import item_title, make_tiny_text_llama, one_torch_thread  # noqa: F401

from tslrec.lite_llm4rec.generative import (
    GenerativeConfig,
    finetune_steps,
    generate_top_k,
    history_prompt,
    prompt_lengths,
)
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.lora import add_lora


def test_generative_baseline_writes_item_ids_by_beam_search(tmp_path):
    llm, tok = load_llm(LLMConfig(name_or_path=str(make_tiny_text_llama(tmp_path / "llm"))), kind="causal_lm")
    llm = add_lora(llm, 4, 8, 0.0, None)
    titles = [""] + [item_title(i) for i in range(1, 31)]
    cfg = GenerativeConfig(max_history=5, num_beams=4, top_k=4)
    prompts = [history_prompt(titles, list(range(s, s + 8)), cfg) for s in range(1, 20)]
    assert prompts[0].count(";") == 4 + 5 and item_title(8) in prompts[0] and item_title(3) not in prompts[0]
    losses = finetune_steps(
        llm, tok, prompts, [s + 8 for s in range(1, 20)], steps=3, batch_size=4, lr=1e-2, bf16=False
    )
    assert len(losses) == 3 and losses[-1] < losses[0]
    ranked = generate_top_k(llm, tok, prompts[:3], num_items=30, cfg=cfg, bf16=False)
    assert len(ranked) == 3 and all(len(r) <= 4 and len(set(r)) == len(r) for r in ranked)
    assert all(1 <= i <= 30 for r in ranked for i in r)
    assert min(prompt_lengths(tok, prompts)) > 5 * 4  # several tokens per item, vs one position per item in Lite
