"""GGUF files: ``header`` scans tensor types, ``reader`` maps tensors and metadata to a
checkpoint, ``tokenizer`` builds the tokenizer from the metadata. Part of ``loading``.
"""
