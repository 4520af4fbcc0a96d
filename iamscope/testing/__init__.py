"""Test helpers users can use too: a real local issuer and a pytest plugin.

The plugin registers itself through the ``pytest11`` entry point and provides the
``local_issuer`` fixture (a started :class:`LocalIssuer`, stopped after the test).
"""

from iamscope.testing._issuer import LocalIssuer, SigningKey, make_key

__all__ = ["LocalIssuer", "SigningKey", "make_key"]
