"""Fixtures for the gateway tests: a real collector (rotel) per test that asks for one."""

from tests.telemetry._rotel import rotel  # noqa: F401 - registered by import
