"""The audit: one call runs every check on a model and its data and returns one report.

``audit(model, data, checks=..., config=...) -> AuditReport``. Checks live one per module in this
package and register themselves in :data:`CHECKS` (see :mod:`.base`); the CLI (``workbench audit
run``), the app's Audit page and the HTML report list them from there.
"""

from . import accuracy, backdoor, data, explanations, labels, poison, robustness  # noqa: F401  (register)
from .base import CHECKS, NEEDS, AuditContext, Check, CheckOutcome, Condition, Param, register
from .run import AuditReport, Suspects, audit, join_suspects

__all__ = ["CHECKS", "NEEDS", "AuditContext", "AuditReport", "Check", "CheckOutcome", "Condition", "Param",
           "Suspects", "audit", "join_suspects", "register"]
