"""Convert any checkpoint ``load`` accepts into an MLX folder, optionally quantized.

``python -m mlx_gen.convert --hf-path SRC --mlx-path DST [--dtype D] [-q] [--q-bits B]
[--q-group-size G] [--force]``, or :func:`convert` from Python.

The folder has what ``mlx_gen.load`` and ``mlx_lm.load`` read: sharded safetensors
with ``model.safetensors.index.json``, ``config.json`` (sorted keys), the tokenizer
files and chat template, and a ``generation_config.json`` holding the source's
*resolved* settings, so loading the folder gives back an equal
:class:`~mlx_gen.loading.generation_config.GenerationConfig` (same EOS ids in the same order).
Precision rules (what happens to an already-quantized source) are in
:mod:`mlx_gen.convert.quantize`; the safe-write rules are in :mod:`mlx_gen.convert.writer`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from mlx_gen.convert.quantize import (
    DEFAULT_Q_BITS,
    DEFAULT_Q_GROUP_SIZE,
    QUANT_BITS,
    QUANT_GROUP_SIZES,
    check_quantization,
    set_precision,
)
from mlx_gen.convert.writer import (
    MAX_SHARD_BYTES,
    ShardProgress,
    check_destination,
    staging_folder,
    write_config,
    write_generation_config,
    write_tokenizer,
    write_weights,
)
from mlx_gen.loading.architecture import DTYPES, build_model
from mlx_gen.loading.loader import read_checkpoint, resolve_checkpoint_config
from mlx_gen.loading.sources import resolve_source


def format_size(nbytes: int) -> str:
    """``nbytes`` in decimal units: ``"540.1 MB"``."""
    size = float(nbytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert` wrote.

    Attributes:
        path: The output folder.
        source: The resolved source (folder or ``.gguf`` file).
        source_bytes: Bytes of the source's tensors.
        output_bytes: Bytes of the tensors written.
        shards: Number of safetensors files written.
        precision: ``"4-bit"``/``"8-bit"`` when quantized, else the dtype, or
            ``"as stored"`` when neither was asked for.
    """

    path: Path
    source: Path
    source_bytes: int
    output_bytes: int
    shards: int
    precision: str

    def summary(self) -> str:
        """One line: ``"source 540.1 MB -> 141.3 MB (4-bit)"``."""
        return (
            f"source {format_size(self.source_bytes)} -> {format_size(self.output_bytes)} "
            f"({self.precision})"
        )


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    quantize: bool = False,
    q_bits: int = DEFAULT_Q_BITS,
    q_group_size: int = DEFAULT_Q_GROUP_SIZE,
    force: bool = False,
    progress: ShardProgress | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> ConvertReport:
    """Convert the checkpoint at ``src`` into an MLX model folder at ``dst``.

    Args:
        src: A Hugging Face or MLX folder, a ``.gguf`` file or a Hub repo id.
        dst: The output folder; written to a temporary folder beside it first, and
            renamed into place only when complete.
        dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"`` for every floating
            weight; ``None`` keeps the stored types. Given for a quantized source
            (without ``quantize``), it dequantizes to a float model.
        quantize: Quantize linear and embedding layers (affine, mlx-lm's layout). A
            quantized source is dequantized first.
        q_bits: Bits per weight when quantizing: 4 or 8.
        q_group_size: Weights per scale when quantizing: 32, 64 or 128.
        force: Replace an existing non-empty ``dst`` (after the new folder is complete).
        progress: Called after each weight shard is written with
            ``(index, count, file_name, nbytes)``.
        max_shard_bytes: Largest safetensors file to write (mlx-lm's 5 GiB default).

    Returns:
        A :class:`ConvertReport` with the sizes before and after.

    Raises:
        FileNotFoundError: ``src`` or one of its files is missing.
        ValueError: A bad option value, an existing ``dst`` without ``force`` (or, with
            it, a ``dst`` that is not a model folder, or the current directory), an
            unsupported ``model_type``, a bad config value or a corrupt source file
            (each named).
        OSError: Writing failed (e.g. a full disk); ``dst`` is as it was.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; valid: {', '.join(DTYPES)}")
    if quantize:
        check_quantization(q_bits, q_group_size)
    source = resolve_source(src)
    dst = Path(os.path.abspath(Path(dst).expanduser()))  # "." and ".." get a real name.
    check_destination(dst, force=force, source=source)
    checkpoint = read_checkpoint(source)
    settings = {
        **(checkpoint.generation_config or {}),
        **resolve_checkpoint_config(checkpoint).to_json_dict(),
    }
    source_bytes = sum(v.nbytes for v in checkpoint.weights.values())
    model = build_model(checkpoint, dtype=dtype)
    config = set_precision(
        model,
        checkpoint.config,
        dtype=dtype,
        quantize=quantize,
        bits=q_bits,
        group_size=q_group_size,
        source=str(source),
    )
    tokenizer = checkpoint.tokenizer
    del checkpoint  # Its tensors are the model's; let them go shard by shard.
    existed = dst.is_dir() and any(dst.iterdir())
    try:
        with staging_folder(dst, force=force) as tmp:
            output_bytes, shards = write_weights(
                tmp, model, max_shard_bytes=max_shard_bytes, progress=progress
            )
            write_config(tmp, config)
            write_tokenizer(tmp, tokenizer)
            write_generation_config(tmp, settings)
    except OSError as e:  # A full disk, a read-only folder: say what was kept.
        kept = "the existing folder is unchanged" if existed else "nothing was written"
        error = OSError(f"writing {dst} failed ({e.strerror or e}); {kept}")
        error.errno = e.errno
        raise error from None
    precision = f"{q_bits}-bit" if quantize else dtype or "as stored"
    return ConvertReport(dst, source, source_bytes, output_bytes, shards, precision)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one ``error:`` line (exit 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        allow_abbrev=False,
        description="Convert a checkpoint (HF/MLX folder, Hub repo id or .gguf) to an MLX folder.",
    )
    parser.add_argument(
        "--hf-path",
        required=True,
        metavar="SRC",
        help="source: a model folder, a Hub repo id or a .gguf file",
    )
    parser.add_argument("--mlx-path", required=True, metavar="DST", help="output folder")
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        help="cast floating weights (dequantizes a quantized source); "
        "default: keep the stored types",
    )
    parser.add_argument(
        "-q",
        "--quantize",
        action="store_true",
        help="quantize (a quantized source is dequantized first)",
    )
    parser.add_argument(
        "--q-bits",
        type=int,
        choices=QUANT_BITS,
        default=None,
        help=f"bits per weight with -q (default {DEFAULT_Q_BITS})",
    )
    parser.add_argument(
        "--q-group-size",
        type=int,
        choices=QUANT_GROUP_SIZES,
        default=None,
        help=f"weights per scale with -q (default {DEFAULT_Q_GROUP_SIZE})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty --mlx-path once the new folder is complete",
    )
    return parser


def _print_progress(index: int, count: int, name: str, nbytes: int) -> None:
    print(f"wrote {name} ({index}/{count}, {format_size(nbytes)})", file=sys.stderr, flush=True)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP: unwind like Ctrl-C, so that the staging folder is removed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    0 on success; 2 on bad input or a failed write (one ``error:`` line on stderr, the
    output as it was); 130 after Ctrl-C, 143 after SIGTERM and 129 after SIGHUP (the
    partial output is removed, no traceback).
    """
    parser = _parser()
    try:  # argparse exits on bad arguments (and --help); return its status instead.
        args = parser.parse_args(argv)
        if not args.quantize and (args.q_bits is not None or args.q_group_size is not None):
            parser.error("--q-bits/--q-group-size need -q (--quantize)")
    except SystemExit as e:
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    # SIGTERM (and SIGHUP: the terminal closed) unwind like Ctrl-C: no partial folder stays.
    stops = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _terminated) for sig in stops if in_main_thread}
    try:
        report = convert(
            args.hf_path,
            args.mlx_path,
            dtype=args.dtype,
            quantize=args.quantize,
            q_bits=args.q_bits or DEFAULT_Q_BITS,
            q_group_size=args.q_group_size or DEFAULT_Q_GROUP_SIZE,
            force=args.force,
            progress=_print_progress,
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{report.summary()}; saved to {report.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
