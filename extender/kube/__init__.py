"""The one Kubernetes client layer: client construction, errors, retries, Events, label and annotation names.

Only this package imports kubernetes-asyncio (an import-linter contract checks it). ``names`` is pure data,
so the view can import it without pulling in a client.
"""
