"""Code that runs inside an inference engine's own process, to patch the weights it serves.

Kubernetes gives a GPU to one container, so the delta the agent verified is scattered into the
engine's parameters by the engine itself: vLLM loads :class:`~.vllm_worker.DeltarollWorkerExtension`
into every worker (``--worker-extension-cls``) and the agent calls it through ``/collective_rpc``;
SGLang calls :func:`~.sglang_loader.patch_in_memory` in every scheduler (``--custom-weight-loader``)
when the agent posts ``/update_weights_from_tensor``. Installed with
``deltaroll[engine-extension]``: it uses the engine's torch as it is and requires none.

Modules: ``placement`` (checkpoint positions to a rank's slice, numpy), ``layout`` (which live
parameter region holds a checkpoint tensor, read off vLLM's and SGLang's layers),
``ranked_patch`` (the all-or-nothing scatter across ranks), ``vllm_worker`` and
``sglang_loader`` (the engines' entry points).
"""
