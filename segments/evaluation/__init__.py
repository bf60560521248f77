"""The segment condition language and its one SQL compiler.

- definition.py: validation, limits, what a definition reads (for real-time dependencies)
- fields.py: allow-lists of fields, property paths, operators, units
- compiler.py: one function per node type -> psycopg.sql boolean expressions and timers
- queries.py: the members / evaluation statements for recompute, real-time and preview
- describe.py: the readable sentence
"""

from segments.evaluation.definition import DefinitionError, validate
from segments.evaluation.describe import sentence
from segments.evaluation.queries import evaluation_statement, members_statement

__all__ = ["DefinitionError", "evaluation_statement", "members_statement", "sentence", "validate"]
