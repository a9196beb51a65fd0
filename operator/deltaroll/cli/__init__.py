"""The ``deltaroll`` command and the ``kubectl-deltaroll`` plugin."""
