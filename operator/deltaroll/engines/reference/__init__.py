"""A small inference server for the sandbox and the tests, shaped like the real engines.

``python -m deltaroll.engines.reference --model-path DIR --port N`` (or ``deltaroll engine serve
--kind reference``) serves a Hugging Face causal LM from local safetensors on the CPU (or a GPU):
OpenAI-style completions, the mean token loss of given texts (what a rollout's analysis step
measures), SGLang's reload endpoint, and the digests of the tensors it holds, which prove that
it serves exactly a published version. See :mod:`deltaroll.engines.reference.server`.

This package's ``__init__`` stays free of torch so the client imports fast.
"""
