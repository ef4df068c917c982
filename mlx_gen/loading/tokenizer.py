"""Load a checkpoint folder's tokenizer into mlx-lm's ``TokenizerWrapper``, running no code.

``tokenizer.json`` (a fast tokenizer) is preferred; a folder with only a SentencePiece
``tokenizer.model`` gets :class:`~mlx_gen.loading.sentencepiece_tokenizer.SentencePieceTokenizer`.
The wrapper adds mlx-lm's streaming detokenizer and chat-template handling.

A model folder never runs code: transformers is called with ``trust_remote_code=False``
(so it never asks "Do you wish to run the custom code?" on stdin), a folder whose
``tokenizer_config.json`` needs custom tokenizer code (``auto_map`` with a class
transformers does not have) is refused, ``chat_template_type``/``tool_parser_type`` must
name one of mlx-lm's own modules, and chat templates render in a sandbox
(:mod:`mlx_gen.loading.chat_template`).
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from typing import Any

import jinja2
import mlx_lm.chat_templates
import mlx_lm.tool_parsers
from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer, TokenizerWrapper
from mlx_lm.tokenizer_utils import load as load_hf_tokenizer
from transformers import AutoConfig, PreTrainedTokenizerBase
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

from mlx_gen.loading.chat_template import (
    CHAT_TEMPLATE_JINJA,
    TOKENIZER_CONFIG_JSON,
    check_template_bounds,
    select_template,
    template_error,
    template_file,
)
from mlx_gen.loading.generation_config import read_json
from mlx_gen.loading.sentencepiece_tokenizer import SentencePieceTokenizer


class CheckedTokenizer(TokenizerWrapper):
    """mlx-lm's ``TokenizerWrapper`` whose chat-template errors name the template's file.

    transformers renders in a Jinja sandbox already, but a blocked or broken template
    surfaces as ``jinja2.SecurityError``/``TemplateSyntaxError``; here it is one
    ``ValueError`` naming :attr:`template_source`.
    """

    _template_source: str

    @classmethod
    def wrap(cls, tokenizer: TokenizerWrapper, template_source: str) -> CheckedTokenizer:
        """``tokenizer`` (built by mlx-lm) as a ``CheckedTokenizer``; it shares its state."""
        checked = cls.__new__(cls)
        checked.__dict__.update(tokenizer.__dict__)
        checked._template_source = template_source
        return checked

    @property
    def template_source(self) -> str:
        """The file (or GGUF key) the chat template came from."""
        return self._template_source

    def apply_chat_template(self, *args: Any, tokenize: bool = True, **kwargs: Any) -> Any:
        """As ``TokenizerWrapper.apply_chat_template``; what the template raises (a Jinja
        error, or its expressions' ``ArithmeticError``/``MemoryError``/``LookupError``/
        ``TypeError``) is one ``ValueError`` naming the template's file.

        A transformers tokenizer's template is first rendered in mlx_gen's bounded
        sandbox with the same values (:func:`check_template_bounds`): one that passes a
        bound of CPU, memory or time is refused before transformers renders it.
        """
        self._check_template_bounds(args[0] if args else kwargs.get("conversation"), kwargs)
        try:
            return super().apply_chat_template(*args, tokenize=tokenize, **kwargs)
        except ValueError:  # Already clear: a bad argument, or a template error named here.
            raise
        except (jinja2.TemplateError, ArithmeticError, MemoryError, LookupError, TypeError) as e:
            raise template_error(e, self._template_source) from None

    def _check_template_bounds(self, messages: Any, kwargs: dict[str, Any]) -> None:
        hf = self._tokenizer
        if getattr(self, "_chat_template", None) is not None or not isinstance(
            hf, PreTrainedTokenizerBase
        ):
            return  # mlx-lm's own Python templates, or the bounded SentencePiece renderer
        try:
            template = hf.get_chat_template(kwargs.get("chat_template"), kwargs.get("tools"))
        except ValueError:
            return  # No template: transformers says so.
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return  # transformers refuses it, or a batch of chats (mlx_gen sends one)
        variables = {**hf.special_tokens_map, "tools": None, "documents": None}
        variables.update({k: v for k, v in kwargs.items() if k not in _RENDER_ARGUMENTS})
        thinking = getattr(self, "_thinking_kwarg", None)  # as mlx-lm's wrapper adds it
        if thinking and "enable_thinking" in variables:
            variables[thinking] = variables.pop("enable_thinking")
        if thinking and thinking not in variables:
            variables[thinking] = getattr(self, "has_thinking", False)
        check_template_bounds(
            template,
            [{k: v for k, v in m.items() if v is not None} for m in messages],  # as transformers
            source=self._template_source,
            add_generation_prompt=bool(kwargs.get("add_generation_prompt", False)),
            variables=variables,
        )


# transformers' apply_chat_template arguments that are not template variables.
_RENDER_ARGUMENTS = frozenset(
    "conversation chat_template add_generation_prompt continue_final_message tokenize padding "
    "truncation max_length return_tensors return_dict return_assistant_tokens_mask "
    "tokenizer_kwargs sanitize_control_tokens".split()
)


def _module_names(package: Any) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def _known_tokenizer_class(name: Any) -> bool:
    if not isinstance(name, str) or not name:
        return False
    return any(tokenizer_class_from_name(n) is not None for n in (name, name + "Fast"))


def check_tokenizer_config(settings: dict[str, Any], *, source: Path) -> None:
    """Refuse a ``tokenizer_config.json`` that would run code or import a missing module.

    Raises:
        ValueError: ``auto_map`` names custom tokenizer code and ``tokenizer_class`` is not
            a transformers class; ``chat_template_type``/``tool_parser_type`` is not one of
            mlx-lm's modules (the valid ones are listed).
    """
    auto_map = settings.get("auto_map")
    custom = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else auto_map
    if custom and not _known_tokenizer_class(settings.get("tokenizer_class")):
        raise ValueError(
            f"{source}: auto_map.AutoTokenizer={custom!r} with tokenizer_class="
            f"{settings.get('tokenizer_class')!r} needs the folder's own Python code, and "
            "mlx_gen never runs code from a model folder; remove auto_map and set "
            'tokenizer_class to a transformers class (e.g. "PreTrainedTokenizerFast") to use '
            "tokenizer.json as it is"
        )
    for key, package in (
        ("chat_template_type", mlx_lm.chat_templates),
        ("tool_parser_type", mlx_lm.tool_parsers),
    ):
        value, valid = settings.get(key), _module_names(package)
        if value is not None and value not in valid:
            raise ValueError(f"{source}: {key}={value!r} is invalid (valid: {', '.join(valid)})")


def _check_transformers_config(folder: Path) -> None:
    """Let transformers parse ``config.json`` as its tokenizer loader will, naming the file.

    ``AutoTokenizer`` reads ``config.json`` too and falls back to a plain config on a
    ``ValueError``/``OSError``; anything else it raises (a value of the wrong type) is
    the config's fault, not the tokenizer's.
    """
    try:
        AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, OSError):
        pass
    except Exception as e:  # huggingface_hub's strict-dataclass errors, KeyError, ...
        message = " ".join(str(e).split())
        raise ValueError(
            f"{folder / 'config.json'}: transformers cannot read it ({type(e).__name__}: {message})"
        ) from None


def _sentencepiece(folder: Path, settings: dict[str, Any]) -> TokenizerWrapper:
    source = template_file(folder)
    if source.name == CHAT_TEMPLATE_JINJA:
        try:
            template = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{source}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    else:
        template = select_template(settings.get("chat_template"), source=str(source))
    spm_tokenizer = SentencePieceTokenizer(
        folder / "tokenizer.model",
        add_bos_token=settings.get("add_bos_token", True),
        chat_template=template,
        template_source=str(source),
    )
    return TokenizerWrapper(spm_tokenizer, NaiveStreamingDetokenizer)


def load_tokenizer(folder: Path) -> CheckedTokenizer:
    """Return the tokenizer of a checkpoint folder.

    Raises:
        FileNotFoundError: Neither ``tokenizer.json`` nor ``tokenizer.model`` is present.
        ValueError: A tokenizer file cannot be parsed, or asks to run code (the file and
            key are named).
    """
    settings_path = folder / TOKENIZER_CONFIG_JSON
    settings = read_json(settings_path) if settings_path.exists() else {}
    check_tokenizer_config(settings, source=settings_path)
    if (folder / "tokenizer.json").exists():
        _check_transformers_config(folder)
        try:
            tokenizer = load_hf_tokenizer(
                folder, tokenizer_config_extra={"trust_remote_code": False}
            )
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file.
            message = " ".join(str(e).split())
            raise ValueError(
                f"{folder / 'tokenizer.json'}: cannot load the tokenizer "
                f"({type(e).__name__}: {message})"
            ) from None
    elif (folder / "tokenizer.model").exists():
        tokenizer = _sentencepiece(folder, settings)
    else:
        raise FileNotFoundError(
            f"{folder}: no tokenizer found (expected tokenizer.json or a SentencePiece "
            "tokenizer.model)"
        )
    return CheckedTokenizer.wrap(tokenizer, str(template_file(folder)))
