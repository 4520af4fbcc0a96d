"""What may they see: roles, attributes, row plans and trace scopes."""

from iamscope.policy.access import Access, AttributeValue, describe_plan
from iamscope.policy.loader import load_policy, policy_from_mapping
from iamscope.policy.model import AttributeSpec, Binding, Policy, Role, RoleRows
from iamscope.policy.resolve import CompiledPolicy
from iamscope.policy.rows import ALL, NONE, And, AttrRef, Cmp, Condition, Not, Or, RowPlan
from iamscope.policy.traces import TraceGrant, TraceScope

__all__ = [
    "ALL",
    "NONE",
    "Access",
    "And",
    "AttrRef",
    "AttributeSpec",
    "AttributeValue",
    "Binding",
    "Cmp",
    "CompiledPolicy",
    "Condition",
    "Not",
    "Or",
    "Policy",
    "Role",
    "RoleRows",
    "RowPlan",
    "TraceGrant",
    "TraceScope",
    "describe_plan",
    "load_policy",
    "policy_from_mapping",
]
