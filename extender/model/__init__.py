"""The pure domain model: catalog, placements, layouts, fit, fragmentation and scoring.

Nothing here performs I/O or imports aiohttp or kubernetes_asyncio; the import-linter contract in
``pyproject.toml`` keeps it so. The extender, the simulator and the benchmarks share this code.
"""
