"""What may they see: roles, attributes, row plans and trace scopes.

``to_sqlalchemy`` lives in :mod:`iamscope.policy.render.sqlalchemy` (the optional
``iamscope[sqlalchemy]`` extra).
"""

from iamscope.policy.access import Access, AttributeValue, describe_plan
from iamscope.policy.loader import load_policy, policy_from_mapping
from iamscope.policy.model import AttributeSpec, Binding, Policy, Role, RoleRows
from iamscope.policy.reload import PolicyStore, ReloadResult
from iamscope.policy.render.python import to_predicate
from iamscope.policy.render.rls import apply_rls, create_policy_sql, rls_settings
from iamscope.policy.render.sql import to_sql
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
    "PolicyStore",
    "ReloadResult",
    "Role",
    "RoleRows",
    "RowPlan",
    "TraceGrant",
    "TraceScope",
    "apply_rls",
    "create_policy_sql",
    "describe_plan",
    "load_policy",
    "policy_from_mapping",
    "rls_settings",
    "to_predicate",
    "to_sql",
]
