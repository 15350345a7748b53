"""loopmon: a live monitor for autonomous coding-agent loops.

Data flows collectors/ (sources) -> monitor/ (event schema, bus, scorer, CLI) -> sinks/.
"""

__version__ = "0.1.0"
