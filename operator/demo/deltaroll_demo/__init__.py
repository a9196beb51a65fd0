"""``make demo`` (``python -m deltaroll_demo``): a whole rollout on a laptop, no cluster, no GPU.

Its own distribution, ``deltaroll-demo`` (``operator/demo``), beside the product: no image ships
it. It also holds :mod:`.training`, the one small-model trainer of the demo, the tests and the
benchmarks.

The sandbox control plane, the CRDs from crds/, the real operator, a ``file://`` store; then a
small Llama trained for real (v1, v2, a broken v3), v1 published as an anchor and served by four
inference pods (reference engine + agent), v2 computed by a ModelDelta Job and rolled out through a
canary with an eval analysis, v3 caught by the analysis and rolled back. The last line of output
is one JSON object; the exit status is 0 only if every fact of the story was read back as told.

Modules: :mod:`.model` (training), :mod:`.manifests` (the objects), :mod:`.observe` (reads),
:mod:`.narration` (live table), :mod:`.story` (the steps), :mod:`.summary` (checks, numbers),
:mod:`.codec` (the codec-only demo: ``python -m deltaroll_demo codec``).
"""
