"""The language-model code shared by stage 1, stage 2 and Lite-LLM4Rec.

loading      LLMConfig, load_llm: built-in names (smollm2, minilm), local folders, GGUF files, hub ids
soft_prompt  SoftPromptBuilder: prompt text + projected item vectors (+ item titles) -> inputs_embeds;
             tokenize_item_texts, match_token_scale
pooling      last-token and masked-mean pooling of hidden states
lora         add_lora, load_adapter: peft LoRA set-up and saved adapters
weights      copy_weights: named tensors from a file into modules, with a one-line error on a mismatch
"""
