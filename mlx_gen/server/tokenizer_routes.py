"""``/tokenize``, ``/detokenize``, ``/tokenizer_info`` (vLLM's shapes) and ``/apply-template``.

Evaluation harnesses (lm-eval's ``local-completions``) probe these so that they never
download a tokenizer: ``/tokenizer_info`` gives the special tokens and chat template,
``/tokenize`` text or messages → ids, ``/detokenize`` ids → text; ``/apply-template``
gives a chat request's rendered prompt (text and ids).
"""

from __future__ import annotations

from mlx_gen.prompts import encode_prompt
from mlx_gen.server.chat import chat_messages, chat_prompt_ids
from mlx_gen.server.errors import ApiError
from mlx_gen.server.responses import DetokenizeResponse, TokenizeResponse, TokenizerInfo
from mlx_gen.server.schemas import ChatRequest, DetokenizeRequest, TokenizeRequest
from mlx_gen.server.settings_map import check_prompt_chars, context_length
from mlx_gen.server.state import ServerState


def tokenize(state: ServerState, req: TokenizeRequest) -> TokenizeResponse:
    """Ids of ``prompt`` (special tokens as asked) or of ``messages`` (chat template).

    It tokenizes: the route runs it in a thread, off the event loop.
    """
    state.check_model(req.model)
    state.check_fields(req)
    tok = state.model.tokenizer
    if (req.prompt is None) == (req.messages is None):
        raise ApiError(400, "pass exactly one of prompt and messages", param="prompt")
    if req.prompt is not None:
        check_prompt_chars(len(req.prompt), state.limits, "prompt")
        ids = list(tok.encode(req.prompt, add_special_tokens=req.add_special_tokens))
    else:
        messages = [{"role": m.role, "content": m.content or ""} for m in req.messages]
        chars = sum(len(m["content"]) for m in messages if isinstance(m["content"], str))
        check_prompt_chars(chars, state.limits, "messages")
        try:
            ids = encode_prompt(tok, messages=messages)
        except Exception as err:  # noqa: BLE001 - a template error is the request's fault
            raise ApiError(400, f"messages: {err}", param="messages") from err
    strs = [state.texts.text_of(i) for i in ids] if req.return_token_strs else None
    return TokenizeResponse(
        count=len(ids), max_model_len=context_length(state.model), tokens=ids, token_strs=strs
    )


def detokenize(state: ServerState, req: DetokenizeRequest) -> DetokenizeResponse:
    """The text of ``tokens``."""
    state.check_model(req.model)
    state.check_fields(req)
    vocab = state.model.vocab_size
    bad = [t for t in req.tokens if not 0 <= t < vocab]
    if bad:
        raise ApiError(
            400, f"tokens: ids {bad} are outside the vocabulary (0..{vocab - 1})", param="tokens"
        )
    return DetokenizeResponse(prompt=state.model.tokenizer.decode(req.tokens))


def tokenizer_info(state: ServerState) -> TokenizerInfo:
    """The tokenizer's class, special tokens, chat template and limits."""
    tok = state.model.tokenizer
    hf = getattr(tok, "_tokenizer", tok)
    template = getattr(hf, "chat_template", None)
    return TokenizerInfo(
        tokenizer_class=type(hf).__name__,
        eos_token=getattr(hf, "eos_token", None),
        bos_token=getattr(hf, "bos_token", None),
        pad_token=getattr(hf, "pad_token", None),
        unk_token=getattr(hf, "unk_token", None),
        chat_template=template if isinstance(template, str) else None,
        model_max_length=context_length(state.model),
        vocab_size=state.model.vocab_size,
        eos_token_ids=list(state.model.generation_config.eos_token_ids),
    )


def apply_template(state: ServerState, req: ChatRequest) -> dict:
    """The prompt the chat endpoint would build for ``req``: its text and ids.

    Renders and tokenizes: call it off the event loop. ``prompt_token_ids`` are exactly those
    ``/v1/chat/completions`` prompts with; ``prompt`` is the template's text (decoding
    the ids may differ, e.g. in a BOS the tokenizer adds).
    """
    state.check_model(req.model)
    ids = chat_prompt_ids(state, req)
    try:
        text = state.model.tokenizer.apply_chat_template(
            chat_messages(req), add_generation_prompt=True, tokenize=False
        )
    except Exception as err:  # noqa: BLE001 - a template error is the request's fault
        raise ApiError(400, f"messages: {err}", param="messages") from err
    return {"prompt": text, "prompt_token_ids": ids}
