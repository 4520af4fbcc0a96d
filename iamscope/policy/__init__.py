"""What may they see: roles, attributes, row plans and trace scopes."""

from iamscope.policy.rows import ALL, NONE, And, AttrRef, Cmp, Condition, Not, Or, RowPlan

__all__ = ["ALL", "NONE", "And", "AttrRef", "Cmp", "Condition", "Not", "Or", "RowPlan"]
